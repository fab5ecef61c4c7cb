"""``ymir-exc``: the platform's side of an executor, local.

Examples::

    ymir-exc sample trees --out ./trees                       # the bundled sample as in/ + out/
    ymir-exc run det-demo-tmi --task training                 # train on the sample, store a model
    ymir-exc run det-demo-tmi --task mining --task infer --model latest
    ymir-exc models list

Exit status: 0 success; 1 the executor failed; 2 bad arguments or input (a named error, no
traceback); 3 the executor's outputs break the contract (monitor.txt included); 70 an internal
error of ymir-exc (one line on stderr, the traceback in a log file whose path it names); 130
interrupted (Ctrl-C; the executor's process group is stopped and state 4 written first).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from ymir_exc import __version__
from ymir_exc.errors import YmirExcError

EXIT_EXECUTOR_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_OUTPUT = 3
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def _out(msg: str = "") -> None:
    print(msg, flush=True)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ sample

def cmd_sample(args: argparse.Namespace) -> int:
    from ymir_exc.harness.datasets import load_sample, write_sample

    root = write_sample(args.name, args.out)
    _out(f"wrote sample {args.name!r} to {root}: {load_sample(args.name).summary()}")
    _out("  in/: assets, annotations (det-voc:raw), train/val/candidate-index.tsv, env.yaml, config.yaml; out/: empty")
    return 0


# ------------------------------------------------------------------ run

def _load_user_config(path: Optional[str]) -> Dict[str, Any]:
    if not path:
        return {}
    from ymir_exc.env import load_yaml_mapping

    return load_yaml_mapping(path, what="--config file")


def _dataset_from_args(args: argparse.Namespace):
    from ymir_exc.harness.datasets import load_dataset

    class_names = [c.strip() for c in args.class_names.split(",") if c.strip()] if args.class_names else None
    aliases = {}
    for a in args.class_alias or []:
        src, sep, dst = a.partition("=")
        if not sep or not src or not dst:
            raise ValueError(f"--class-alias {a!r}: expected NAME=CLASS")
        aliases[src.strip()] = dst.strip()
    return load_dataset(args.dataset, class_names, aliases, args.unknown_classes,
                        image_root=getattr(args, "image_root", None), duplicates=getattr(args, "duplicates", "error"))


def print_outcome(outcome: Any, store: Any, topk: int = 10) -> Dict[str, Any]:
    """Print what a task produced (the lines a user and scripts look for); returns a summary."""
    prepared, result = outcome.prepared, outcome.run
    summary: Dict[str, Any] = {"task_id": prepared.task_id, "tasks": prepared.tasks, "work_dir": str(prepared.work_dir),
                               "runtime": outcome.runtime}
    if result is None:
        return summary
    summary.update(exit_code=result.exit_code, seconds=round(result.seconds, 3))
    mon = result.monitor
    if not result.ok:
        why = "timed out" if result.timed_out else "was interrupted" if result.interrupted else \
            f"failed with exit code {result.exit_code}"
        _err(f"executor {why} after {result.seconds:.1f} s; monitor.txt: "
             + (f"state {mon.state}, return code {mon.return_code}" if mon else "missing"))
        if mon and mon.message:
            _err("  " + mon.message.splitlines()[0])
        _err(f"last lines of {result.log_path}:")
        _err(result.log_tail(20))
        summary["monitor"] = mon.raw if mon else None
        return summary
    _out(f"executor finished in {result.seconds:.1f} s")
    reported = [p for rep in (outcome.training, outcome.mining, outcome.infer) if rep is not None for p in rep.problems]
    extra = [p for p in outcome.problems if p not in reported]  # monitor.txt, changed dataset files
    if extra:
        _report_problems("run", extra)
    if outcome.training is not None:
        rep = outcome.training
        if rep.problems:
            _report_problems("training result", rep.problems)
        else:
            _out(f"pack success, model hash: {rep.model_hash}, best_stage_name: {rep.best_stage_name}, mAP: {rep.mAP}")
            _out(f"  stored in {store.location}; stages: " + ", ".join(
                f"{n} ({s.evaluation_result().get('mAP', 0):.4f})" for n, s in rep.stages.items()))
            summary.update(model_hash=rep.model_hash, best_stage_name=rep.best_stage_name, mAP=rep.mAP)
    if outcome.mining is not None:
        mrep = outcome.mining
        if mrep.problems:
            _report_problems("mining result", mrep.problems)
        k = topk or len(mrep.ranked)
        _out(f"mining: {len(mrep.ranked)} candidates scored; top {min(k, len(mrep.ranked))}:")
        sources = prepared.stats.sources if prepared.stats else {}
        for i, (p, sc) in enumerate(mrep.ranked[:k], 1):
            src = sources.get(os.path.basename(p))
            _out(f"  {i:3d}  {sc:.6f}  {p}" + (f"  ({os.path.basename(src)})" if src else ""))
        summary["topk"] = [{"path": p, "score": sc} for p, sc in mrep.ranked[:k]]
    if outcome.infer is not None:
        irep = outcome.infer
        if irep.problems:
            _report_problems("infer result", irep.problems)
        with_boxes = irep.with_boxes
        _out(f"infer: {irep.images} images, {irep.boxes} boxes ({with_boxes} images with boxes); per class: "
             + (", ".join(f"{c} {n}" for c, n in sorted(irep.per_class.items())) or "none"))
        if irep.dropped:
            _out("  dropped: " + ", ".join(f"{why} {n}" for why, n in sorted(irep.dropped.items())))
        _out(f"  results: {prepared.out_dir / 'infer-result.json'}")
        summary.update(infer_boxes=irep.boxes, infer_images=irep.images)
    summary["problems"] = outcome.problems
    return summary


def cmd_run(args: argparse.Namespace) -> int:
    import shlex

    from ymir_exc.harness.executors import resolve_executor
    from ymir_exc.harness.models import ModelStore
    from ymir_exc.harness.pipeline import run_task

    tasks = [t for t in ("training", "mining", "infer") if t in (args.task or ["training"])]
    executor, runtime = resolve_executor(args.executor, args.runtime)
    templates = executor.templates()
    for t in tasks:
        if t not in templates:
            _err(f"warning: {executor.name} has no img-man/{t}-template.yaml")
    ds = _dataset_from_args(args)
    store = ModelStore(args.model_location)
    dry = args.dry_run or args.print_argv
    work = Path(tempfile.mkdtemp(prefix="ymir-exc-dry-run-")) if dry else (Path(args.work_dir) if args.work_dir else None)
    def announce(prepared: Any) -> None:
        for w in prepared.warnings:
            _err(f"warning: {w}")
        _out(f"task {prepared.task_id} ({' + '.join(prepared.tasks)}) of {executor.name} [{runtime}] on {ds.summary()}")
        _out(f"work dir: {prepared.work_dir}")
        for key in ("pretrained_model_params", "model_params_path"):
            if prepared.config.get(key):
                _out(f"model: {key} = {prepared.config[key]}; classes {prepared.config['class_names']}")

    outcome = run_task(executor, runtime, tasks, ds, work_dir=work, store=store, model_ref=args.model,
                       user_config=_load_user_config(args.config), protocol_version=args.protocol_version,
                       gpu_id=args.gpu_id or "", timeout=args.timeout, show=not args.quiet,
                       network_none=args.network_none, user=args.user, dry_run=dry, before_run=announce,
                       assets=args.assets)
    prepared = outcome.prepared
    if args.print_argv:
        _out(shlex.join(outcome.argv))
        shutil.rmtree(prepared.work_dir, ignore_errors=True)
        return 0
    if args.dry_run:
        announce(prepared)
        _out("dry run: would run\n  " + shlex.join(outcome.argv))
        if runtime == "local":
            _out(f"  with DEFAULT_ENV_FILE_PATH={prepared.env_file} DEFAULT_CONFIG_FILE_PATH={prepared.config_file}")
        _out("config.yaml:\n" + yaml.safe_dump(prepared.config, sort_keys=False))
        shutil.rmtree(prepared.work_dir, ignore_errors=True)
        return 0
    summary = print_outcome(outcome, store, args.topk)
    (prepared.work_dir / "ymir-exc-run.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if outcome.run is not None and outcome.run.interrupted:
        return EXIT_INTERRUPTED
    if outcome.run is None or not outcome.run.ok:
        return EXIT_EXECUTOR_FAILED
    return EXIT_BAD_OUTPUT if outcome.problems else 0


def _report_problems(what: str, problems: List[str]) -> None:
    _err(f"{what} breaks the contract ({len(problems)} problem(s)):")
    for p in problems:
        _err(f"  - {p}")


# ------------------------------------------------------------------ models

def cmd_models(args: argparse.Namespace) -> int:
    from ymir_exc.harness.models import ModelStore

    store = ModelStore(args.model_location)
    if args.models_cmd == "import":
        from ymir_exc.harness.models import ImportLimits

        limits = ImportLimits(max_info_bytes=args.max_info_size, max_members=args.max_members,
                              max_expansion=args.max_expansion, bomb_member_bytes=args.bomb_member_size)
        m = store.import_package(args.package_path, limits)
        _out(f"pack success, model hash: {m.hash}, best_stage_name: {m.info.best_stage_name}, mAP: {m.mAP()}")
        return 0
    if args.models_cmd == "list":
        models, corrupt = store.scan()
        if not models and not corrupt:
            _out(f"no model stored in {store.location}")
        for name, why in corrupt:
            _out(f"{name}  CORRUPT: {why}")
        for m in models:
            _out(f"{m.hash}  best {m.info.best_stage_name} mAP {m.mAP():.4f}  classes {m.class_names}  "
                 f"executor {m.info.task_context.get('executor', '?')}  stages {len(m.info.stages)}")
        return 0
    m = store.get(args.hash)
    _out(f"model {m.hash}  ({m.path})")
    _out(f"  executor: {m.info.task_context.get('executor', '?')}  producer: {m.info.task_context.get('producer', '?')}")
    _out(f"  classes: {m.class_names}")
    _out(f"  best stage: {m.info.best_stage_name}  mAP: {m.mAP()}")
    for name, st in m.info.stages.items():
        metrics = ", ".join(f"{k} {v}" for k, v in st.evaluation_result().items())
        _out(f"  stage {name}: files {st.files}; {metrics}; timestamp {st.timestamp}")
    return 0


# ------------------------------------------------------------------ inspect / verify

def cmd_inspect(args: argparse.Namespace) -> int:
    from ymir_exc.harness.executors import TEMPLATE_FILES, resolve_executor

    executor, runtime = resolve_executor(args.executor, args.runtime)
    _out(f"# executor {executor.name} [{runtime}]")
    status = 0
    for name in ["manifest.yaml"] + list(TEMPLATE_FILES.values()):
        text = executor.read_text(name)
        _out(f"# --- /img-man/{name}")
        if text is None:
            _out("# (missing)")
            continue
        try:
            executor.read_yaml(name)
        except ValueError as e:
            _err(f"not pure YAML: {e}")
            status = EXIT_BAD_OUTPUT
        _out(text.rstrip("\n"))
    return status


def cmd_verify(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ymir_exc.harness.executors import resolve_executor
    from ymir_exc.harness.models import ModelStore
    from ymir_exc.harness.verify import verify

    executor, runtime = resolve_executor(args.executor, args.runtime)
    ds = _dataset_from_args(args)
    store = ModelStore(args.model_location) if args.model_location else None
    checks = verify(executor, runtime, ds, work_root=Path(args.work_dir) if args.work_dir else None, store=store,
                    user_config=_load_user_config(args.config), protocol_version=args.protocol_version,
                    timeout=args.timeout, show=not args.quiet, network_none=args.network_none, user=args.user,
                    crash=not args.no_crash)
    table = Table(title=f"ymir-exc verify {executor.name} [{runtime}]")
    for col in ("scenario", "check", "result", "detail"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.scenario, c.name, "[green]PASS[/green]" if c.ok else "[red]FAIL[/red]", c.detail)
    Console(width=max(120, shutil.get_terminal_size().columns)).print(table)
    failed = [c for c in checks if not c.ok]
    _out(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


# ------------------------------------------------------------------ loop

def cmd_loop(args: argparse.Namespace) -> int:
    import time

    from ymir_exc.harness.executors import resolve_executor
    from ymir_exc.harness.loop import run_loop, table, write_outputs
    from ymir_exc.harness.models import ModelStore

    executor, runtime = resolve_executor(args.executor, args.runtime)
    ds = _dataset_from_args(args)
    out = Path(args.out or Path("ymir-work") / f"loop-{time.strftime('%Y%m%d%H%M%S')}").resolve()
    store = ModelStore(args.model_location or out / "models")
    strategies = list(dict.fromkeys(args.mining_algorithm + ([args.baseline] if args.baseline else [])))
    _out(f"loop: {executor.name} [{runtime}] on {ds.summary()}")
    _out(f"  initial {args.initial}, rounds {args.rounds}, top-{args.topk}, strategies {strategies}, seed {args.seed}; "
         f"out {out}")
    t0 = time.monotonic()
    results = run_loop(executor, runtime, ds, initial=args.initial, rounds=args.rounds, topk=args.topk,
                       strategies=strategies, seed=args.seed, out_dir=out, store=store,
                       user_config=_load_user_config(args.config), continue_training=args.continue_training,
                       show=not args.quiet, log=_out)
    meta = {"executor": executor.name, "dataset": ds.name, "initial": args.initial, "rounds": args.rounds,
            "topk": args.topk, "strategies": strategies, "seed": args.seed, "val_images": len(ds.val),
            "continue_training": args.continue_training, "seconds": round(time.monotonic() - t0, 1)}
    paths = write_outputs(results, out, meta)
    _out("")
    _out(table(results))
    _out(f"figures: {paths['json']}" + (f"; plot: {paths['png']}" if "png" in paths else
                                          " (no plot: pip install matplotlib)"))
    return 0


# ------------------------------------------------------------------ schema

def cmd_schema(args: argparse.Namespace) -> int:
    from ymir_exc import env, formats

    models = {"env.yaml": env.EnvConfig, "result.yaml": formats.TrainingResult,
              "result.yaml (legacy, protocol < 1.0.0)": formats.LegacyTrainingResult,
              "infer-result.json box": formats.InferAnnotation, "ymir-info.yaml": formats.ModelPackageInfo}
    _out(json.dumps({k: m.model_json_schema() for k, m in models.items()}, indent=2))
    return 0


def _seconds(text: str) -> float:
    """argparse type of ``--timeout``: a positive, finite number of seconds."""
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number of seconds")
    return v


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    """--runtime, --dataset and the class options, shared by run, verify and loop."""
    p.add_argument("--runtime", default="auto", choices=["auto", "local", "docker", "podman"],
                   help="auto: a folder runs locally, an image with docker (if its daemon answers) else podman")
    p.add_argument("--dataset", help="bundled sample name (default trees), a YMIR in/ folder, a VOC folder, "
                                     "a COCO .json or a YOLO data.yaml")
    p.add_argument("--class-names", help="comma-separated class names (default: from the data)")
    p.add_argument("--class-alias", action="append", metavar="NAME=CLASS", help="map a class of the data onto a class")
    p.add_argument("--unknown-classes", choices=["stop", "ignore"], default="stop",
                   help="a box of a class not in --class-names: stop with the list (default) or drop it")
    p.add_argument("--image-root", help="COCO: the folder images are taken from (default: the json's folder "
                                        "and its parent)")
    p.add_argument("--duplicates", choices=["error", "first", "merge"], default="error",
                   help="the same image bytes with different labels: stop listing them (default), keep the "
                        "first copy's labels, or merge the boxes")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ymir-exc", description="Run and check YMIR executors locally.")
    p.add_argument("--version", action="version", version=f"ymir-exc {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("sample", help="write a bundled sample dataset as in/ + out/ (voc_dog layout)")
    s.add_argument("name", choices=["trees"])
    s.add_argument("--out", required=True, help="folder to write (DIR/in, DIR/out)")
    s.set_defaults(func=cmd_sample)

    r = sub.add_parser("run", help="prepare in/, run an executor, check and collect its outputs")
    r.add_argument("executor", help="executor folder (img-man/ + app/start.py) or image tag")
    _add_dataset_args(r)
    r.add_argument("--task", action="append", choices=["training", "mining", "infer"],
                   help="training (default), mining, infer; give --task mining --task infer for both")
    r.add_argument("--config", help="YAML of hyper-parameters overriding the image's template")
    r.add_argument("--model", help="model package: HASH[@STAGE], a unique prefix, or 'latest' (default stage: best)")
    r.add_argument("--work-dir", help="work dir W (default ./ymir-work/<task id>)")
    r.add_argument("--model-location", help="model store (default $YMIR_EXC_MODEL_LOCATION or ~/.ymir-exc/models)")
    r.add_argument("--protocol-version", default="1.1.0", help="env.yaml protocol_version (0.x legacy, 1.x, 2.x)")
    r.add_argument("--gpu-id", default="", help="host GPU ids, e.g. '0,1' (default: CPU)")
    r.add_argument("--timeout", type=_seconds, help="stop the executor after this many seconds")
    r.add_argument("--topk", type=int, default=10, help="mining: how many top candidates to print (default 10)")
    r.add_argument("--network-none", action="store_true", help="containers: run with --network none")
    r.add_argument("--assets", choices=["auto", "link", "copy", "reflink"], default="auto",
                   help="how images get into in/assets: auto (default: a reflink where the file system can, "
                        "else a hard link), link, copy, reflink; local runs check hard-linked images afterwards")
    r.add_argument("--user", help="containers: --user UID:GID (default: yours)")
    r.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    r.add_argument("--print-argv", action="store_true", help="print the executor's command line only")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)

    m = sub.add_parser("models", help="list, show and import model packages")
    m.add_argument("--model-location", help="model store (default $YMIR_EXC_MODEL_LOCATION or ~/.ymir-exc/models)")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    msub.add_parser("list", help="stored packages, newest first")
    sh = msub.add_parser("show", help="one package's stages, metrics and classes")
    sh.add_argument("hash", help="sha1, unique prefix or 'latest'")
    im = msub.add_parser("import", help="import a model package (tar.gz with ymir-info.yaml)")
    im.add_argument("--package-path", required=True)
    im.add_argument("--max-members", type=int, default=10_000, help="refuse more members (default 10000)")
    im.add_argument("--max-info-size", type=int, default=1 << 20, metavar="BYTES",
                    help="refuse a larger ymir-info.yaml (default 1 MiB)")
    im.add_argument("--max-expansion", type=float, default=100.0, metavar="RATIO",
                    help="refuse members adding up to more than RATIO x the package's size while one is over "
                         "--bomb-member-size (default 100; 0 disables)")
    im.add_argument("--bomb-member-size", type=int, default=64 << 20, metavar="BYTES",
                    help="see --max-expansion (default 64 MiB)")
    m.set_defaults(func=cmd_models)

    ins = sub.add_parser("inspect", help="print an executor's manifest and templates")
    ins.add_argument("executor", help="executor folder or image tag")
    ins.add_argument("--runtime", default="auto", choices=["auto", "local", "docker", "podman"])
    ins.set_defaults(func=cmd_inspect)

    v = sub.add_parser("verify", help="run every task on a dataset and check the contract; table of checks")
    v.add_argument("executor", help="executor folder or image tag")
    _add_dataset_args(v)
    v.add_argument("--config", help="YAML of hyper-parameters overriding the templates (e.g. fewer epochs)")
    v.add_argument("--work-dir", help="where the scenarios' work dirs go (default: a temp dir)")
    v.add_argument("--model-location", help="model store (default: inside the work dir)")
    v.add_argument("--protocol-version", default="1.1.0")
    v.add_argument("--timeout", type=_seconds, help="per scenario, seconds")
    v.add_argument("--network-none", action="store_true")
    v.add_argument("--user", help="containers: --user UID:GID")
    v.add_argument("--no-crash", action="store_true", help="skip the crash scenario")
    v.add_argument("--quiet", action="store_true")
    v.set_defaults(func=cmd_verify)

    lp = sub.add_parser("loop", help="train / mine / label / retrain rounds; mining vs a random baseline")
    lp.add_argument("executor", help="executor folder or image tag")
    _add_dataset_args(lp)
    lp.add_argument("--initial", type=int, required=True, help="labeled training images to start with")
    lp.add_argument("--rounds", type=int, required=True, help="mining rounds (trainings = rounds + 1)")
    lp.add_argument("--topk", type=int, required=True, help="images mined and labeled per round")
    lp.add_argument("--mining-algorithm", required=True, action="append",
                    help="the executor's mining_algorithm, e.g. entropy; repeat to compare several")
    lp.add_argument("--baseline", choices=["random"], help="also run the same rounds selecting at random")
    lp.add_argument("--seed", type=int, default=0)
    lp.add_argument("--continue-training", action="store_true", help="train from the previous round's model")
    lp.add_argument("--config", help="YAML overriding the templates (e.g. epochs)")
    lp.add_argument("--out", help="output folder (default ./ymir-work/loop-<time>)")
    lp.add_argument("--model-location", help="model store (default OUT/models)")
    lp.add_argument("--quiet", action="store_true")
    lp.set_defaults(func=cmd_loop)

    sc = sub.add_parser("schema", help="print the JSON Schema of every file format")
    sc.set_defaults(func=cmd_schema)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(args.func, args)


#: errors of the input (files, arguments, packages), shown as one line with exit status 2
INPUT_ERRORS = (YmirExcError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
                PermissionError, ValueError, RuntimeError)


def guarded(func: Any, args: argparse.Namespace) -> int:
    """Run a command with the exit-status policy of the module docstring: a named input error is
    one line and exit 2; Ctrl-C exits 130; anything else is an internal error: one line naming a
    log file (``$YMIR_EXC_LOG_DIR``, else the temp folder) that holds the traceback, exit 70."""
    try:
        return func(args)
    except BrokenPipeError:  # e.g. `ymir-exc inspect X | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        _err("ymir-exc: interrupted")
        return EXIT_INTERRUPTED
    except INPUT_ERRORS as e:
        _err(f"ymir-exc: error: {e}")
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - the one place that turns a bug into a log file
        return _internal_error(e)


def _internal_error(e: BaseException) -> int:
    import time
    import traceback

    log_dir = os.environ.get("YMIR_EXC_LOG_DIR") or tempfile.gettempdir()
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    try:
        os.makedirs(log_dir, exist_ok=True)
        fd, log = tempfile.mkstemp(prefix=f"ymir-exc-crash-{time.strftime('%Y%m%d%H%M%S')}-", suffix=".log",
                                   dir=log_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"ymir-exc {__version__}; argv {sys.argv!r}\n{text}")
        where = f"traceback in {log}"
    except OSError as le:
        where = f"could not write a log file ({le})"
    _err(f"ymir-exc: internal error: {type(e).__name__}: {e}; {where}")
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
