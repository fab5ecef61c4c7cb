"""``ymir-exc``: the platform's side of an executor, local.

Examples::

    ymir-exc sample trees --out ./trees                       # the bundled sample as in/ + out/
    ymir-exc run det-demo-tmi --task training                 # train on the sample, store a model
    ymir-exc run det-demo-tmi --task mining --task infer --model latest
    ymir-exc run det-demo-tmi --task infer --source photos/ --model latest --save-vis vis/
    ymir-exc models list
    ymir-exc init my-exec && ymir-exc verify my-exec

Exit status: 0 success; 1 the executor failed; 2 bad arguments or input (a named error, no
traceback); 3 the executor's outputs break the contract (monitor.txt included; ``verify``: a check
failed; a warning, such as no tensorboard logs, does not); 70 an internal error of ymir-exc (one
line on stderr, the traceback in a log file whose path it names); 130 interrupted (Ctrl-C; the
executor's process group is stopped and state 4 written first); 143 terminated (SIGTERM, e.g.
from ``timeout`` or a CI runner: handled as Ctrl-C, temp dirs removed, loop.json kept). With
``--json`` (run, verify, models, loop) stdout holds one JSON document (on an error
``{"error": ..., "exit_status": N}``) and every other line goes to stderr. A closed stdout or
stderr (``ymir-exc run ... | head -1``) does not stop the work: that stream is switched to /dev/null
and the exit status still reflects the task.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from ymir_exc import __version__
from ymir_exc.errors import YmirExcError
from ymir_exc.settings import PROTOCOL_VERSION, TASKS

EXIT_OK = 0
EXIT_EXECUTOR_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_OUTPUT = 3
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM

#: set by main() for --json: human lines then go to stderr, stdout holds one JSON document
_JSON_MODE = False


#: set by main() when ``--json`` is on the command line, so an argparse error prints a document too
_JSON_WANTED = False
#: the signal (SIGTERM) that interrupted the command, once one did; None for Ctrl-C or none
_SIGNAL: int | None = None


def _out(msg: str = "") -> None:
    from ymir_exc.harness.output import write_line

    write_line(msg, sys.stderr if _JSON_MODE else sys.stdout)


def _err(msg: str) -> None:
    from ymir_exc.harness.output import write_line

    write_line(msg, sys.stderr)


def _interrupted_status() -> int:
    """130 after Ctrl-C, 143 after SIGTERM."""
    return 128 + _SIGNAL if _SIGNAL else EXIT_INTERRUPTED


def _resolve(ref: str, runtime: str) -> Any:
    """``resolve_executor``, then for an image one read of its manifest, so that a name that is
    neither a folder nor a runnable image is refused the same way by run, verify, loop and
    inspect (a named error, exit 2) before anything is prepared.

    Raises:
        FileNotFoundError: no such folder and the engine cannot run it as an image (the message
            lists the bundled executors, the closest name and the engine's error).
    """
    from ymir_exc.harness.executors import _not_found, resolve_executor

    executor, rt = resolve_executor(ref, runtime)
    if executor.kind == "image":
        try:
            executor.read_text("manifest.yaml")
        except RuntimeError as e:
            raise FileNotFoundError(f"{_not_found(ref, engines_tried=False)}; as an image: {e}") from None
    return executor, rt


# ------------------------------------------------------------------ sample


def cmd_sample(args: argparse.Namespace) -> int:
    from ymir_exc.harness.datasets import load_sample
    from ymir_exc.harness.workspace import write_sample

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {args.out}: exists and is not an empty folder; choose a new one")
    root = write_sample(args.name, args.out)
    _out(f"wrote sample {args.name!r} to {root}: {load_sample(args.name).summary()}")
    _out("  in/: assets, annotations (det-voc:raw), train/val/candidate-index.tsv, env.yaml, config.yaml; out/: empty")
    return 0


# ------------------------------------------------------------------ run


def _load_user_config(path: str | None, sets: list[str] | None = None) -> dict[str, Any]:
    """``--config`` file (a YAML mapping) with ``--set key=value`` overrides on top (values
    read as YAML scalars: ``epochs=2`` is an int, ``name=a,b`` a string).

    Raises:
        ConfigFileError: the file is not a YAML mapping; ValueError: a --set without ``=``.
    """
    cfg: dict[str, Any] = {}
    if path:
        from ymir_exc.env import load_yaml_mapping

        cfg = dict(load_yaml_mapping(path, what="--config file"))
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            cfg[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            cfg[key.strip()] = value
    return cfg


def _checked_config(args: argparse.Namespace, executor: Any) -> dict[str, Any]:
    """The user's config after the unknown-key check (see ``check_config_keys``), without the
    reserved keys the platform sets (each dropped with a warning naming where it came from:
    ``--config FILE`` or ``--set KEY=...``)."""
    from ymir_exc.harness.executors import check_config_keys
    from ymir_exc.harness.workspace import RESERVED_KEYS

    sets = getattr(args, "set", None)
    cfg = _load_user_config(args.config, sets)
    check_config_keys(cfg, executor, allow_unknown=getattr(args, "allow_unknown_keys", False))
    set_keys = {item.partition("=")[0].strip() for item in sets or []}
    for k in [k for k in cfg if k in RESERVED_KEYS]:
        origin = f"--set {k}=..." if k in set_keys else f"--config {args.config}"
        _err(f"warning: {origin} sets the reserved key {k!r}; ignored (the platform sets it)")
        del cfg[k]
    return cfg


def _run_options(args: argparse.Namespace, executor: Any, runtime: str) -> Any:
    """The RunOptions of ``run``, ``verify`` and ``loop``, from their flags (a flag a command does
    not have takes the field's default) and the checked ``--config`` / ``--set``
    (:func:`_checked_config`); ``runtime`` is the resolved one.

    Raises:
        ConfigFileError, ValueError: see :func:`_checked_config`.
    """
    from ymir_exc.harness.options import RunOptions

    return RunOptions(
        runtime=runtime,
        protocol_version=getattr(args, "protocol_version", PROTOCOL_VERSION),
        gpu_id=getattr(args, "gpu_id", "") or "",
        timeout=getattr(args, "timeout", None),
        user=getattr(args, "user", None),
        network_none=getattr(args, "network_none", False),
        model_location=args.model_location,
        user_config=_checked_config(args, executor),
        quiet=args.quiet,
        assets=getattr(args, "assets", "auto"),
        allow_unknown_keys=getattr(args, "allow_unknown_keys", False),
    )


def _dataset_from_args(args: argparse.Namespace, across_splits: str = "merge") -> Any:
    """The dataset of ``--dataset`` and the class options; ``across_splits`` as
    :func:`ymir_exc.harness.datasets.resolve_duplicates` (``error`` for the loop)."""
    from ymir_exc.harness.datasets import load_dataset

    class_names = [c.strip() for c in args.class_names.split(",") if c.strip()] if args.class_names else None
    aliases = {}
    for a in args.class_alias or []:
        src, sep, dst = a.partition("=")
        if not sep or not src or not dst:
            raise ValueError(f"--class-alias {a!r}: expected NAME=CLASS")
        aliases[src.strip()] = dst.strip()
    return load_dataset(
        args.dataset,
        class_names,
        aliases,
        args.unknown_classes,
        image_root=getattr(args, "image_root", None),
        duplicates=getattr(args, "duplicates", "error"),
        across_splits=across_splits,
    )


def print_outcome(outcome: Any, store: Any, topk: int = 10) -> dict[str, Any]:
    """Print what a task produced (the lines a user and scripts look for); returns a summary."""
    prepared, result = outcome.prepared, outcome.run
    summary: dict[str, Any] = {
        "task_id": prepared.task_id,
        "tasks": prepared.tasks,
        "work_dir": str(prepared.work_dir),
        "runtime": outcome.runtime,
    }
    if result is None:
        return summary
    summary.update(exit_code=result.exit_code, seconds=round(result.seconds, 3))
    if not result.ok:
        _print_failure(outcome, summary)
        return summary
    _out(f"executor finished in {result.seconds:.1f} s")
    reported = [p for rep in (outcome.training, outcome.mining, outcome.infer) if rep is not None for p in rep.problems]
    extra = [p for p in outcome.problems if p not in reported]  # monitor.txt, changed dataset files
    if extra:
        _report_problems("run", extra)
    if outcome.training is not None:
        _print_training(outcome.training, store, summary)
    if outcome.mining is not None:
        _print_mining(outcome.mining, prepared, topk, summary)
    if outcome.infer is not None:
        _print_infer(outcome.infer, prepared, summary)
    summary["problems"] = outcome.problems
    return summary


def _print_failure(outcome: Any, summary: dict[str, Any]) -> None:
    """Why the executor failed, its last log lines, and the user's images those lines name."""
    prepared, result = outcome.prepared, outcome.run
    mon = result.monitor
    why = (
        "timed out"
        if result.timed_out
        else "was interrupted"
        if result.interrupted
        else f"failed with exit code {result.exit_code}"
    )
    _err(
        f"executor {why} after {result.seconds:.1f} s; monitor.txt: "
        + (f"state {mon.state}, return code {mon.return_code}" if mon else "missing")
    )
    if mon and mon.message:
        _err("  " + mon.message.splitlines()[0])
    tail = result.log_tail(20)
    _err(f"last lines of {result.log_path}:")
    _err(tail)
    named = _assets_named(tail, prepared.stats.sources if prepared.stats else {})
    if named:
        _err("images named in those lines (asset -> your file):")
        for asset, src in named.items():
            _err(f"  {asset} -> {src}")
    if prepared.stats and prepared.stats.sources:
        mapping = prepared.work_dir / "assets.tsv"
        # only for a failure that mentions an asset: a bad hyper-parameter or a timeout has no image to trace
        if named or "assets/" in tail or (mon is not None and "assets/" in mon.message):
            _err(f"every asset's source image: {mapping}")
        summary["assets_tsv"] = str(mapping)
    summary["monitor"] = mon.raw if mon else None


def _print_training(rep: Any, store: Any, summary: dict[str, Any]) -> None:
    if rep.problems:
        _report_problems("training result", rep.problems)
        return
    _out(f"pack success, model hash: {rep.model_hash}, best_stage_name: {rep.best_stage_name}, mAP: {rep.mAP}")
    _out(
        f"  stored in {store.location}; stages: "
        + ", ".join(f"{n} ({s.evaluation_result().get('mAP', 0):.4f})" for n, s in rep.stages.items())
    )
    summary.update(model_hash=rep.model_hash, best_stage_name=rep.best_stage_name, mAP=rep.mAP)


def _print_mining(mrep: Any, prepared: Any, topk: int, summary: dict[str, Any]) -> None:
    if mrep.problems:
        _report_problems("mining result", mrep.problems)
    k = topk or len(mrep.ranked)
    _out(f"mining: {len(mrep.ranked)} candidates scored; top {min(k, len(mrep.ranked))}:")
    sources = prepared.stats.sources if prepared.stats else {}
    for i, (p, sc) in enumerate(mrep.ranked[:k], 1):
        src_of: str | None = sources.get(os.path.basename(p))
        _out(f"  {i:3d}  {sc:<12.6g}  {p}" + (f"  ({os.path.basename(src_of)})" if src_of else ""))
    summary["topk"] = [{"path": p, "score": sc} for p, sc in mrep.ranked[:k]]


def _print_infer(irep: Any, prepared: Any, summary: dict[str, Any]) -> None:
    if irep.problems:
        _report_problems("infer result", irep.problems)
    _out(
        f"infer: {irep.images} images, {irep.boxes} boxes ({irep.with_boxes} images with boxes); per class: "
        + (", ".join(f"{c} {n}" for c, n in sorted(irep.per_class.items())) or "none")
    )
    if irep.dropped:
        _out("  dropped: " + ", ".join(f"{why} {n}" for why, n in sorted(irep.dropped.items())))
    _out(f"  results: {prepared.out_dir / 'infer-result.json'}")
    summary.update(infer_boxes=irep.boxes, infer_images=irep.images)


def _assets_named(text: str, sources: dict[str, str]) -> dict[str, str]:
    """``{asset file name: the user's image}`` for each asset (``<sha1>.<ext>``, as in
    ``in/assets``) that ``text`` (an executor's last log lines) names, in order of appearance."""
    import re

    found: dict[str, str] = {}
    for m in re.finditer(r"[0-9a-f]{40}\.[A-Za-z0-9]+", text):
        if m.group(0) in sources:
            found.setdefault(m.group(0), sources[m.group(0)])
    return found


def _write_asset_map(prepared: Any) -> None:
    """``W/assets.tsv``: one ``asset<TAB>source image`` line per asset of the task, so an error
    that names an asset (``in/assets/ab/<sha1>.jpg``) can be traced to the user's file."""
    from ymir_exc._io import atomic_write

    sources = prepared.stats.sources if prepared.stats else {}
    if sources:
        atomic_write(prepared.work_dir / "assets.tsv", "".join(f"{a}\t{src}\n" for a, src in sorted(sources.items())))


def _run_dataset(args: argparse.Namespace, tasks: list[str]) -> Any:
    """The dataset a run prepares ``in/`` from: ``--source`` images, or ``--dataset`` with the
    candidates of ``--split`` for mining / infer."""
    from ymir_exc.harness.pipeline import task_dataset
    from ymir_exc.harness.sources import source_dataset

    if args.source:
        if "training" in tasks:
            raise ValueError(
                "--source gives images without labels: use it with --task mining / --task infer "
                "(training takes --dataset)"
            )
        if args.dataset:
            raise ValueError("give --source or --dataset, not both")
        if args.split:
            raise ValueError("--split chooses among a --dataset's images; --source uses every image it names")
        return source_dataset(args.source)
    ds, note = task_dataset(_dataset_from_args(args), tasks, args.split)
    if note:
        _err(f"note: {note}")
    return ds


def _write_user_results(outcome: Any, ds: Any, summary: dict[str, Any], save_vis: str | None) -> None:
    """predictions.json / mining.tsv in the work dir, keyed by the user's paths; --save-vis."""
    from ymir_exc.harness.predictions import asset_sources, mining_rows, write_mining_tsv, write_predictions
    from ymir_exc.harness.predictions import save_vis as draw

    prepared = outcome.prepared
    stats = prepared.stats.sources if prepared.stats else {}
    sources = asset_sources(stats, [i.image_path for i in ds.candidate])
    if outcome.mining is not None and not outcome.mining.problems:
        rows = mining_rows(outcome.mining.ranked, sources)
        path = prepared.work_dir / "mining.tsv"
        write_mining_tsv(path, rows)
        summary["mining_tsv"] = str(path)
        _out(f"mining.tsv: {path}  (path, score, rank; {len(rows)} images)")
    if outcome.infer is not None and not outcome.infer.problems:
        path = prepared.work_dir / "predictions.json"
        from ymir_exc.harness.collect import task_env

        infer_file = task_env(prepared.env, prepared.work_dir).output.infer_result_file
        counts = write_predictions(path, infer_file, sources, list(prepared.config["class_names"]))
        summary["predictions_json"] = str(path)
        _out(
            f"predictions.json: {path}  ({counts['images']} images, {counts['annotations']} boxes; "
            f"file_name = your path)"
        )
        if save_vis:
            written = draw(Path(save_vis), json.loads(path.read_text(encoding="utf-8")))
            summary["save_vis"] = str(Path(save_vis).resolve())
            _out(f"boxes drawn on {len(written)} copies in {Path(save_vis).resolve()}")


def cmd_run(args: argparse.Namespace) -> int:
    from ymir_exc.harness.executors import keys_for_other_tasks
    from ymir_exc.harness.pipeline import check_task_config, run_task

    tasks = [t for t in TASKS if t in (args.task or ["training"])]
    if args.save_vis and "infer" not in tasks:
        raise ValueError("--save-vis draws inference boxes: add --task infer")
    executor, runtime = _resolve(args.executor, args.runtime)
    templates = executor.templates()
    for t in tasks:
        if t not in templates:
            _err(f"warning: {executor.name} has no img-man/{t}-template.yaml")
    options = _run_options(args, executor, runtime)
    for key, others in keys_for_other_tasks(dict(options.user_config), templates, tasks).items():
        _err(
            f"warning: config key {key!r} is not declared by the {' / '.join(tasks)} template "
            f"(only by {' / '.join(others)}); handed over anyway"
        )
    check_task_config(executor, tasks, options.user_config)
    ds = _run_dataset(args, tasks)
    store = options.model_store()
    model_ref = _latest_of(store, args.model, executor.name) if args.model else args.model
    dry = args.dry_run or args.print_argv
    work = (
        Path(tempfile.mkdtemp(prefix="ymir-exc-dry-run-")) if dry else (Path(args.work_dir) if args.work_dir else None)
    )
    announce = _announcer(args, executor.name, runtime, ds)
    try:
        outcome = run_task(
            executor,
            tasks,
            ds,
            options,
            work_dir=work,
            model_ref=model_ref,
            until="prepare" if dry else "collect",
            before_run=announce,
        )
        if dry:
            return _print_dry_run(args, outcome, announce)
    finally:
        if dry and work is not None:
            if args.keep:
                _err(f"kept: {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    return _finish_run(args, outcome, ds, store)


def _announcer(args: argparse.Namespace, executor_name: str, runtime: str, ds: Any) -> Any:
    """The ``before_run`` of ``ymir-exc run``: assets.tsv, the prepare warnings, what runs where."""

    def announce(prepared: Any) -> None:
        _write_asset_map(prepared)
        for w in prepared.warnings:
            _err(f"warning: {w}")
        what = f"{len(ds.candidate)} image(s) of --source {args.source}" if args.source else ds.summary()
        _out(f"task {prepared.task_id} ({' + '.join(prepared.tasks)}) of {executor_name} [{runtime}] on {what}")
        _out(f"work dir: {prepared.work_dir}")
        for key in ("pretrained_model_params", "model_params_path"):
            if prepared.config.get(key):
                _out(f"model: {key} = {prepared.config[key]}; classes {prepared.config['class_names']}")

    return announce


def _print_dry_run(args: argparse.Namespace, outcome: Any, announce: Any) -> int:
    """``--print-argv``: the command line alone; ``--dry-run``: what would run, and config.yaml."""
    import shlex

    prepared = outcome.prepared
    if args.print_argv:
        _out(shlex.join(outcome.argv))
        return 0
    announce(prepared)
    _out("dry run: would run\n  " + shlex.join(outcome.argv))
    if outcome.runtime == "local":
        _out(f"  with DEFAULT_ENV_FILE_PATH={prepared.env_file} DEFAULT_CONFIG_FILE_PATH={prepared.config_file}")
    _out("config.yaml:\n" + yaml.safe_dump(prepared.config, sort_keys=False))
    args.json_doc = {
        "dry_run": True,
        "argv": outcome.argv,
        "config": prepared.config,
        "work_dir": str(prepared.work_dir) if args.keep else None,
    }
    return 0


def _finish_run(args: argparse.Namespace, outcome: Any, ds: Any, store: Any) -> int:
    """Print the outcome, write the user's results and ``W/ymir-exc-run.json``; the exit status."""
    from ymir_exc._io import atomic_write

    summary = print_outcome(outcome, store, args.topk)
    run = outcome.run
    if run is not None and run.ok and ("mining" in outcome.prepared.tasks or "infer" in outcome.prepared.tasks):
        _write_user_results(outcome, ds, summary, args.save_vis)
    if run is not None and run.interrupted:
        code = _interrupted_status()
    elif run is None or not run.ok:
        code = EXIT_EXECUTOR_FAILED
    else:
        code = EXIT_BAD_OUTPUT if outcome.problems else EXIT_OK
    summary["exit_status"] = code
    atomic_write(outcome.prepared.work_dir / "ymir-exc-run.json", json.dumps(summary, indent=2))
    args.json_doc = summary
    return code


def _latest_of(store: Any, model_ref: str, executor: str) -> str:
    """``--model latest[@STAGE]`` as the newest package ``executor`` produced (else the newest
    of any executor, with a note on stderr) -> ``HASH[@STAGE]``; any other ref as given."""
    from ymir_exc.harness.pipeline import resolve_model_ref

    ref, own = resolve_model_ref(store, model_ref, executor)
    assert ref is not None
    if not own:
        digest = ref.partition("@")[0]
        producer = _producer(store, digest)
        _err(
            f"note: no model of {executor} in {store.location}; --model latest is the newest of any executor: "
            f"{digest[:12]}" + (f" (produced by {producer})" if producer else "")
        )
    return ref


def _producer(store: Any, ref: str) -> str | None:
    try:
        producer = store.get(ref, verify=False).info.task_context.get("executor")
        return None if producer is None else str(producer)
    except Exception:
        return None


def _report_problems(what: str, problems: list[str]) -> None:
    _err(f"{what} breaks the contract ({len(problems)} problem(s)):")
    for p in problems:
        _err(f"  - {p}")


# ------------------------------------------------------------------ models


def _model_doc(m: Any) -> dict[str, Any]:
    """A stored package as JSON: hash, path, primary metric, classes, every stage's metrics."""
    return {
        "hash": m.hash,
        "path": str(m.path),
        "best_stage_name": m.info.best_stage_name,
        "object_type": m.object_type,
        "metric": m.metric_name(),
        "value": m.mAP(),
        "class_names": m.class_names,
        "executor": m.info.task_context.get("executor"),
        "producer": m.info.task_context.get("producer"),
        "package_version": m.info.package_version,
        "stages": {
            n: {"files": list(st.files), "timestamp": st.timestamp, "metrics": st.evaluation_result()}
            for n, st in m.info.stages.items()
        },
    }


def cmd_models(args: argparse.Namespace) -> int:
    from ymir_exc.harness.models import ModelStore

    store = ModelStore(args.model_location)
    actions = {
        "import": _models_import,
        "list": _models_list,
        "rm": _models_remove,
        "prune": _models_remove,
        "show": _models_show,
    }
    return actions[args.models_cmd](args, store)


def _models_import(args: argparse.Namespace, store: Any) -> int:
    from ymir_exc.harness.models import ImportLimits

    limits = ImportLimits(
        max_info_bytes=args.max_info_size,
        max_members=args.max_members,
        max_expansion=args.max_expansion,
        bomb_member_bytes=args.bomb_member_size,
        bomb_total_bytes=args.bomb_total_size,
    )
    m = store.import_package(args.package_path, limits)
    _out(f"pack success, model hash: {m.hash}, best_stage_name: {m.info.best_stage_name}, {m.metric_name()}: {m.mAP()}")
    args.json_doc = _model_doc(m)
    return 0


def _models_list(args: argparse.Namespace, store: Any) -> int:
    models, corrupt = store.scan()
    if not models and not corrupt:
        _out(f"no model stored in {store.location}")
    for name, why in corrupt:
        _out(f"{name}  CORRUPT: {why}")
    for m in models:
        _out(
            f"{m.hash}  best {m.info.best_stage_name} {m.metric_name()} {m.mAP():.4f}  classes {m.class_names}  "
            f"executor {m.info.task_context.get('executor', '?')}  stages {len(m.info.stages)}"
        )
    args.json_doc = {"location": str(store.location), "models": [_model_doc(m) for m in models]}
    return 0


def _models_remove(args: argparse.Namespace, store: Any) -> int:
    """``models rm`` (the packages named, each announced as it goes) and ``models prune`` (all
    but the ``--keep`` newest)."""
    removed: list[str] = []
    if args.models_cmd == "rm":
        for ref in args.hash:
            removed.append(store.remove(ref))
            _out(f"removed {removed[-1]}")
    else:
        removed = store.prune(args.keep)
        _out(f"removed {len(removed)} package(s), kept the {args.keep} newest in {store.location}")
        for h in removed:
            _out(f"  {h}")
    args.json_doc = {"location": str(store.location), "removed": removed}
    return 0


def _models_show(args: argparse.Namespace, store: Any) -> int:
    m = store.get(args.hash)
    _out(f"model {m.hash}  ({m.path})")
    _out(
        f"  executor: {m.info.task_context.get('executor', '?')}  producer: {m.info.task_context.get('producer', '?')}"
    )
    _out(f"  classes: {m.class_names}")
    ot = f"object_type {m.object_type}" if m.object_type is not None else "no object_type"
    _out(f"  best stage: {m.info.best_stage_name}  {m.metric_name()}: {m.mAP()}  ({ot})")
    for name, st in m.info.stages.items():
        metrics = ", ".join(f"{k} {v}" for k, v in st.evaluation_result().items()) or "no metrics"
        _out(f"  stage {name}: files {st.files}; {metrics}; timestamp {st.timestamp}")
    args.json_doc = _model_doc(m)
    return 0


# ------------------------------------------------------------------ inspect / verify


def cmd_inspect(args: argparse.Namespace) -> int:
    from ymir_exc.harness.executors import TEMPLATE_FILES

    executor, runtime = _resolve(args.executor, args.runtime)
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

    from ymir_exc.harness.output import pipe_safe
    from ymir_exc.harness.verify import verify

    executor, runtime = _resolve(args.executor, args.runtime)
    if executor.kind == "local":  # no entry point: one line and exit 2, as run does
        from ymir_exc.harness.runtime import find_entry_point

        find_entry_point(executor.folder)
    options = _run_options(args, executor, runtime)
    ds = _dataset_from_args(args)
    root = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="ymir-exc-verify-"))
    try:
        checks = verify(executor, ds, options, work_root=root, crash=not args.no_crash)
    finally:
        if args.work_dir or args.keep:
            _err(f"work dirs kept in {root.resolve()}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    table = Table(title=f"ymir-exc verify {executor.name} [{runtime}]")
    for col in ("scenario", "check", "result", "detail"):
        table.add_column(col, overflow="fold")
    for c in checks:
        colour = {"PASS": "green", "WARN": "yellow", "FAIL": "red"}[c.status]
        table.add_row(c.scenario, c.name, f"[{colour}]{c.status}[/{colour}]", c.detail)
    console = Console(width=max(120, shutil.get_terminal_size().columns), stderr=_JSON_MODE)
    pipe_safe(console.file, lambda: console.print(table))
    failed = [c for c in checks if c.failed]
    warned = [c for c in checks if c.status == "WARN"]
    passed = len(checks) - len(failed) - len(warned)
    _out(f"{passed} passed, {len(failed)} failed" + (f", {len(warned)} warning(s)" if warned else ""))
    args.json_doc = {
        "executor": executor.name,
        "runtime": runtime,
        "passed": passed,
        "failed": len(failed),
        "warnings": len(warned),
        "work_dir": str(root.resolve()) if (args.work_dir or args.keep) else None,
        "checks": [
            {"scenario": c.scenario, "check": c.name, "ok": c.ok, "status": c.status, "detail": c.detail}
            for c in checks
        ],
    }
    return EXIT_BAD_OUTPUT if failed else 0


# ------------------------------------------------------------------ init


def cmd_init(args: argparse.Namespace) -> int:
    from ymir_exc.harness.executors import init_executor

    root = init_executor(args.name)
    _out(f"wrote a new executor in {root}:")
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        _out(f"  {p.relative_to(root)}")
    _out(
        f"next: ymir-exc verify {args.name}   (then edit app/start.py; build the image: "
        f"docker build -t ymir/{root.name} {args.name}, FROM the base built from a clone of ymir-exc: see README.md)"
    )
    return 0


# ------------------------------------------------------------------ loop


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected integers separated by commas, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: expected distinct integers, e.g. 0,1,2")
    return seeds


def _count(minimum: int) -> Callable[[str], int]:
    """argparse type of a count flag (``--topk``, ``--rounds``, ``--initial``): an integer >=
    ``minimum``; anything else exits 2 naming the value."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: must be at least {minimum}")
        return v

    return parse


def cmd_loop(args: argparse.Namespace) -> int:
    import time
    from dataclasses import replace

    from ymir_exc.harness.executors import check_mining_algorithm
    from ymir_exc.harness.loop import BASELINE, MIN_TEST_IMAGES, LoopPlan, run_loop, split_test, write_json

    executor, runtime = _resolve(args.executor, args.runtime)
    options = _run_options(args, executor, runtime)
    ds = _dataset_from_args(args, across_splits="error")
    out = Path(args.out or Path("ymir-work") / f"loop-{time.strftime('%Y%m%d%H%M%S')}").resolve()
    meta, done = _loop_meta(args, executor.name, ds, options.user_config, out)
    options = replace(options, user_config=meta["config"])
    check_mining_algorithm(executor, [s for s in meta["strategies"] if s != BASELINE])
    meta["test_images"] = len(split_test(ds, meta["test_split"])[1])
    if 0 < meta["test_images"] < MIN_TEST_IMAGES:
        _err(
            f"warning: --test-split {meta['test_split']:g} holds out {meta['test_images']} image(s): a test mAP50 "
            f"on fewer than {MIN_TEST_IMAGES} images is mostly noise"
        )
    _out(f"loop: {executor.name} [{runtime}] on {ds.summary()}")
    _out(
        f"  initial {meta['initial']}, rounds {meta['rounds']}, top-{meta['topk']}, strategies {meta['strategies']}, "
        f"seeds {meta['seeds']}; test {meta['test_images']} images; out {out}"
        + (f"; resuming after {len(done)} finished round(s)" if done else "")
    )
    plan = LoopPlan(**{k: meta[k] for k in ("initial", "rounds", "topk", "strategies", "seeds", "test_split")})
    plan = replace(plan, continue_training=bool(meta["continue_training"]))
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    results: list[Any] = list(done)

    def saved(so_far: list[Any]) -> None:
        results[:] = so_far
        write_json(so_far, out, meta, complete=False)

    try:
        results = run_loop(executor, ds, plan, options, out_dir=out, log=_out, done=done, on_round=saved)
    except KeyboardInterrupt:
        path = write_json(results, out, meta, complete=False)
        _err(
            f"interrupted: {len(results)} finished round(s) kept in {out / 'loop.json'}; "
            f"continue with: ymir-exc loop {args.executor} --out {out} --resume"
        )
        args.json_doc = _loop_doc(meta, path, None, complete=False)
        return _interrupted_status()
    meta["seconds"] = round(time.monotonic() - t0, 1)
    _print_loop(args, results, out, meta)
    return 0


def _check_loop_args(args: argparse.Namespace) -> None:
    """Refuse loop flags that contradict each other.

    Raises:
        ValueError: ``--seed`` with ``--seeds``; ``--mining-algorithm random-harness`` (the
            harness baseline is ``--baseline random-harness``).
    """
    from ymir_exc.harness.loop import BASELINE

    if args.seeds and args.seed is not None:
        raise ValueError("--seed and --seeds together: give one seed with --seed, or several with --seeds")
    if BASELINE in (args.mining_algorithm or []):
        raise ValueError(
            f"--mining-algorithm {BASELINE}: that is the harness's random baseline; ask for it with "
            f"--baseline {BASELINE} (--mining-algorithm random is the executor's own random mining)"
        )


def _loop_meta(
    args: argparse.Namespace, executor_name: str, ds: Any, user_config: Any, out: Path
) -> tuple[dict[str, Any], list[Any]]:
    """(loop.json's ``meta``, the finished rounds): from the command line for a new loop, from
    ``OUT/loop.json`` with ``--resume`` (the command line may repeat its settings, not change
    them). ``meta["config"]`` is the config the loop runs with.

    Raises:
        ValueError: a setting that differs from the resumed loop's, or a missing one;
        FileExistsError: ``--out`` holds something else (or a loop, without ``--resume``).
    """
    from ymir_exc.harness.loop import BASELINE, parse_test_split

    _check_loop_args(args)
    seeds = _parse_seeds(args.seeds) if args.seeds else ([args.seed] if args.seed is not None else None)
    test_split = parse_test_split(args.test_split) if args.test_split else None
    if args.baseline == "random":
        _err(
            f"--baseline random is deprecated: it is the harness-side baseline, now named {BASELINE} "
            f"(use --mining-algorithm random for the executor's own random mining)"
        )
        args.baseline = BASELINE
    wanted = {
        "executor": executor_name,
        "dataset": ds.name,
        "initial": args.initial,
        "rounds": args.rounds,
        "topk": args.topk,
        "continue_training": args.continue_training or None,
        "seeds": seeds,
        "test_split": test_split,
        "strategies": list(dict.fromkeys((args.mining_algorithm or []) + ([args.baseline] if args.baseline else [])))
        or None,
    }
    if args.resume:
        return _resumed_meta(args, wanted, dict(user_config), out, len(ds.val))
    if (out / "loop.json").is_file():
        raise FileExistsError(
            f"--out {out} already holds a loop (loop.json): add --resume to continue it, or choose a new --out"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out}: exists and is not empty; choose a new --out")
    missing = [
        f"--{k.replace('_', '-')}"
        for k in ("initial", "rounds", "topk", "mining_algorithm")
        if getattr(args, k) in (None, [])
    ]
    if missing:
        raise ValueError(f"loop needs {', '.join(missing)} (or --resume with an --out holding loop.json)")
    meta = dict(wanted)
    meta.update(
        continue_training=args.continue_training,
        seeds=seeds or [0],
        config=dict(user_config),
        val_images=len(ds.val),
    )
    return meta, []


def _resumed_meta(
    args: argparse.Namespace, wanted: dict[str, Any], user_config: dict[str, Any], out: Path, val_images: int
) -> tuple[dict[str, Any], list[Any]]:
    """``--resume``: the meta and finished rounds of ``OUT/loop.json``, after checking that the
    command line's settings (``wanted``, None where not given) and config agree with them."""
    from ymir_exc.harness.loop import RESUME_KEYS, read_json

    meta, done = read_json(out)
    for key in RESUME_KEYS:
        if wanted.get(key) is not None and wanted[key] != meta.get(key):
            raise ValueError(
                f"--resume: {out / 'loop.json'} has {key} {meta.get(key)!r}, the command line "
                f"{wanted[key]!r}; leave it out or choose a new --out"
            )
    stored_config = dict(meta.get("config") or {})
    if (args.config or args.set) and user_config != stored_config:
        raise ValueError(
            f"--resume: {out / 'loop.json'} ran with config {stored_config!r}, the command line "
            f"gives {user_config!r}; leave --config / --set out to keep the loop's"
        )
    meta = {k: meta[k] for k in RESUME_KEYS if k in meta}
    meta.setdefault("test_split", None)
    meta.update(config=stored_config, val_images=val_images)
    return meta, done


def _loop_doc(meta: dict[str, Any], loop_json: Path, png: Path | None, complete: bool) -> dict[str, Any]:
    """``--json``'s document of a loop: its meta, where its files are, every round, the paired
    gaps to the baseline."""
    data = json.loads(loop_json.read_text(encoding="utf-8"))
    return {
        "meta": meta,
        "complete": complete,
        "loop_json": str(loop_json),
        "plot": str(png) if png else None,
        "rounds": data["rounds"],
        "gaps": data.get("gaps", {}),
    }


def _print_loop(args: argparse.Namespace, results: list[Any], out: Path, meta: dict[str, Any]) -> None:
    """loop.json and the plot written; a table (and the verdict) per figure."""
    from ymir_exc.harness.loop import METRICS, metrics_of, table, verdict, write_outputs

    paths = write_outputs(results, out, meta)
    seeds = len({r.seed for r in results})
    for metric in metrics_of(results):
        _out("")
        _out(f"{METRICS[metric]}" + (f" (mean +- sample SD over {seeds} seeds):" if seeds > 1 else ":"))
        _out(table(results, metric))
        for line in verdict(results, metric):
            _out(line)
    _out(
        f"figures: {paths['json']}"
        + (f"; plot: {paths['png']}" if "png" in paths else " (no plot: pip install matplotlib)")
    )
    args.json_doc = _loop_doc(meta, paths["json"], paths.get("png"), complete=True)


# ------------------------------------------------------------------ schema


def cmd_schema(args: argparse.Namespace) -> int:
    from ymir_exc import env, formats

    models = {"env.yaml": env.EnvConfig, **formats.file_models()}
    schemas: dict[str, Any] = {k: m.model_json_schema() for k, m in models.items()}  # type: ignore[attr-defined]
    _out(json.dumps(schemas, indent=2))
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
    p.add_argument(
        "--runtime",
        default="auto",
        choices=["auto", "local", "docker", "podman"],
        help="auto: a folder runs locally, an image with docker (if its daemon answers) else podman",
    )
    p.add_argument(
        "--dataset",
        help="bundled sample name (default trees), a YMIR in/ folder, a VOC folder, a COCO .json or a YOLO data.yaml",
    )
    p.add_argument("--class-names", help="comma-separated class names (default: from the data)")
    p.add_argument("--class-alias", action="append", metavar="NAME=CLASS", help="map a class of the data onto a class")
    p.add_argument(
        "--unknown-classes",
        choices=["stop", "ignore"],
        default="stop",
        help="a box of a class not in --class-names: stop with the list (default) or drop it",
    )
    p.add_argument(
        "--image-root", help="COCO: the folder images are taken from (default: the json's folder and its parent)"
    )
    p.add_argument(
        "--duplicates",
        choices=["error", "first", "merge"],
        default="error",
        help="the same image bytes with different labels: stop listing them (default), keep the "
        "first copy's labels, or merge the boxes",
    )


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML of hyper-parameters overriding the image's templates")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="one hyper-parameter (value read as YAML: epochs=2); beats --config; repeatable",
    )
    p.add_argument(
        "--allow-unknown-keys",
        action="store_true",
        help="pass config keys that neither the templates nor the platform know (default: error)",
    )


def _add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout (everything else goes to stderr)"
    )


class _Parser(argparse.ArgumentParser):
    """argparse with one addition: with ``--json`` on the command line, a usage error (exit 2)
    also prints ``{"error": ..., "exit_status": 2}`` on stdout."""

    def error(self, message: str) -> Any:
        if _JSON_WANTED:
            from ymir_exc.harness.output import write_line

            write_line(json.dumps({"error": f"{self.prog}: {message}", "exit_status": EXIT_USAGE}, indent=2))
        return super().error(message)


def build_parser() -> argparse.ArgumentParser:
    """The ``ymir-exc`` parser: one sub-command per ``cmd_*`` function."""
    p = _Parser(prog="ymir-exc", description="Run and check YMIR executors locally.")
    p.add_argument("--version", action="version", version=f"ymir-exc {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    _add_sample_parser(sub)
    _add_run_parser(sub)
    _add_models_parser(sub)
    _add_inspect_parser(sub)
    _add_verify_parser(sub)
    _add_init_parser(sub)
    _add_loop_parser(sub)
    _add_schema_parser(sub)
    return p


def _add_sample_parser(sub: Any) -> None:
    """``ymir-exc sample``'s arguments."""
    s = sub.add_parser("sample", help="write a bundled sample dataset as in/ + out/ (voc_dog layout)")
    s.add_argument("name", choices=["trees"])
    s.add_argument("--out", required=True, help="folder to write (DIR/in, DIR/out)")
    s.set_defaults(func=cmd_sample)


def _add_run_parser(sub: Any) -> None:
    """``ymir-exc run``'s arguments."""
    r = sub.add_parser("run", help="prepare in/, run an executor, check and collect its outputs")
    r.add_argument("executor", help="executor folder (img-man/ + app/start.py) or image tag")
    _add_dataset_args(r)
    r.add_argument(
        "--task",
        action="append",
        choices=list(TASKS),
        help="training (default), mining, infer; give --task mining --task infer for both",
    )
    r.add_argument(
        "--source",
        metavar="PATH|GLOB|FILE",
        help="mining / infer on your own images: a folder (recursive), a glob or one image; no labels",
    )
    r.add_argument(
        "--split",
        choices=["val", "unlabeled", "all"],
        help="mining / infer on --dataset: which images (default: all for infer, unlabeled for mining; "
        "unlabeled falls back to all when there is none)",
    )
    r.add_argument("--save-vis", metavar="DIR", help="infer: draw the boxes onto copies of the images in DIR")
    _add_config_args(r)
    r.add_argument(
        "--model",
        help="model package: HASH[@STAGE], a unique prefix, or 'latest' (the newest this "
        "executor produced, else the newest of any; default stage: best)",
    )
    r.add_argument("--work-dir", help="work dir W (default ./ymir-work/<task id>)")
    r.add_argument("--model-location", help="model store (default $YMIR_EXC_MODEL_LOCATION or ~/.ymir-exc/models)")
    r.add_argument(
        "--protocol-version", default=PROTOCOL_VERSION, help="env.yaml protocol_version (0.x legacy, 1.x, 2.x)"
    )
    r.add_argument("--gpu-id", default="", help="host GPU ids, e.g. '0,1' (default: CPU)")
    r.add_argument("--timeout", type=_seconds, help="stop the executor after this many seconds")
    r.add_argument("--topk", type=int, default=10, help="mining: how many top candidates to print (default 10)")
    r.add_argument("--network-none", action="store_true", help="containers: run with --network none")
    r.add_argument(
        "--assets",
        choices=["auto", "link", "copy", "reflink"],
        default="auto",
        help="how images get into in/assets: auto (default: a reflink where the file system can, "
        "else a hard link), link, copy, reflink; local runs check hard-linked images afterwards",
    )
    r.add_argument("--user", help="containers: --user UID:GID (default: yours)")
    r.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    r.add_argument("--print-argv", action="store_true", help="print the executor's command line only")
    r.add_argument("--keep", action="store_true", help="--dry-run / --print-argv: keep the prepared work dir")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_json_arg(r)
    r.set_defaults(func=cmd_run)


def _add_models_parser(sub: Any) -> None:
    """``ymir-exc models``'s arguments."""
    m = sub.add_parser("models", help="list, show, import and remove model packages")
    location_help = "model store (default $YMIR_EXC_MODEL_LOCATION or ~/.ymir-exc/models)"
    m.add_argument("--model-location", help=location_help)
    _add_json_arg(m)
    msub = m.add_subparsers(dest="models_cmd", required=True)
    ls = msub.add_parser("list", help="stored packages, newest first")
    sh = msub.add_parser("show", help="one package's stages, metrics and classes")
    sh.add_argument("hash", help="sha1, unique prefix (min 6) or 'latest'")
    im = msub.add_parser("import", help="import a model package (tar.gz with ymir-info.yaml)")
    im.add_argument("--package-path", required=True)
    im.add_argument("--max-members", type=int, default=10_000, help="refuse more members (default 10000)")
    im.add_argument(
        "--max-info-size",
        type=int,
        default=1 << 20,
        metavar="BYTES",
        help="refuse a larger ymir-info.yaml (default 1 MiB)",
    )
    im.add_argument(
        "--max-expansion",
        type=float,
        default=100.0,
        metavar="RATIO",
        help="refuse members adding up to more than RATIO x the package's size while one is over "
        "--bomb-member-size or all add up to over --bomb-total-size (default 100; 0 disables)",
    )
    im.add_argument(
        "--bomb-member-size", type=int, default=64 << 20, metavar="BYTES", help="see --max-expansion (default 64 MiB)"
    )
    im.add_argument(
        "--bomb-total-size", type=int, default=1 << 30, metavar="BYTES", help="see --max-expansion (default 1 GiB)"
    )
    rm = msub.add_parser("rm", help="delete stored packages")
    rm.add_argument("hash", nargs="+", help="sha1, unique prefix (min 6) or 'latest'")
    pr = msub.add_parser("prune", help="delete all but the newest packages")
    pr.add_argument("--keep", type=int, required=True, metavar="N", help="how many of the newest to keep")
    for sp in (ls, sh, im, rm, pr):  # the group's options are accepted after the sub command too
        sp.add_argument("--model-location", default=argparse.SUPPRESS, help=location_help)
        sp.add_argument(
            "--json",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print one JSON document on stdout (everything else goes to stderr)",
        )
    m.set_defaults(func=cmd_models)


def _add_inspect_parser(sub: Any) -> None:
    """``ymir-exc inspect``'s arguments."""
    ins = sub.add_parser("inspect", help="print an executor's manifest and templates")
    ins.add_argument("executor", help="executor folder or image tag")
    ins.add_argument("--runtime", default="auto", choices=["auto", "local", "docker", "podman"])
    ins.set_defaults(func=cmd_inspect)


def _add_verify_parser(sub: Any) -> None:
    """``ymir-exc verify``'s arguments."""
    v = sub.add_parser("verify", help="run every task on a dataset and check the contract; table of checks")
    v.add_argument("executor", help="executor folder or image tag")
    _add_dataset_args(v)
    _add_config_args(v)
    v.add_argument("--work-dir", help="where the scenarios' work dirs go, kept (default: a temp dir, removed)")
    v.add_argument("--keep", action="store_true", help="keep the temp dir of the scenarios and print it")
    v.add_argument("--model-location", help="model store (default: inside the work dir)")
    v.add_argument("--protocol-version", default=PROTOCOL_VERSION)
    v.add_argument("--timeout", type=_seconds, help="per scenario, seconds")
    v.add_argument("--network-none", action="store_true")
    v.add_argument("--user", help="containers: --user UID:GID")
    v.add_argument("--no-crash", action="store_true", help="skip the crash scenario")
    v.add_argument("--quiet", action="store_true")
    _add_json_arg(v)
    v.set_defaults(func=cmd_verify)


def _add_init_parser(sub: Any) -> None:
    """``ymir-exc init``'s arguments."""
    it = sub.add_parser("init", help="write a new minimal executor (app/start.py, img-man/, Dockerfile)")
    it.add_argument("name", help="folder to create (its last part names the executor)")
    it.set_defaults(func=cmd_init)


def _add_loop_parser(sub: Any) -> None:
    """``ymir-exc loop``'s arguments."""
    lp = sub.add_parser("loop", help="train / mine / label / retrain rounds; mining vs a random baseline")
    lp.add_argument("executor", help="executor folder or image tag")
    _add_dataset_args(lp)
    lp.add_argument(
        "--initial", type=_count(1), help="labeled training images to start with (required unless --resume)"
    )
    lp.add_argument(
        "--rounds", type=_count(1), help="mining rounds, >= 1 (trainings = rounds + 1; required unless --resume)"
    )
    lp.add_argument(
        "--topk", type=_count(1), help="images mined and labeled per round, >= 1 (required unless --resume)"
    )
    lp.add_argument(
        "--mining-algorithm",
        action="append",
        help="the executor's mining_algorithm, e.g. entropy; repeat to compare several "
        "(checked against the manifest's list before anything runs)",
    )
    lp.add_argument(
        "--baseline",
        choices=["random-harness", "random"],
        help="random-harness: also run the same rounds with the harness picking at random "
        "('random' is a deprecated alias; --mining-algorithm random is the executor's own)",
    )
    lp.add_argument(
        "--test-split",
        metavar="N|FRACTION",
        help="hold out N labeled training images (an integer >= 1) or a fraction in (0, 1) of them "
        "(e.g. 0.2) as a test set, never trained on nor used to pick a stage; the loop reports test mAP50",
    )
    lp.add_argument(
        "--seed",
        type=int,
        help="the seed of the initial split, the baseline's picks, the training and the executor's "
        "random mining (default 0; not with --seeds)",
    )
    lp.add_argument(
        "--seeds",
        metavar="S,S,...",
        help="several seeds, e.g. 0,1,2: the tables show mean +- sample SD, the verdict a paired t-interval",
    )
    lp.add_argument("--continue-training", action="store_true", help="train from the previous round's model")
    _add_config_args(lp)
    lp.add_argument("--out", help="output folder, new or empty (default ./ymir-work/loop-<time>)")
    lp.add_argument(
        "--resume",
        action="store_true",
        help="continue the loop whose loop.json is in --out (finished rounds are not run again)",
    )
    lp.add_argument("--model-location", help="model store (default OUT/models)")
    lp.add_argument("--quiet", action="store_true")
    _add_json_arg(lp)
    lp.set_defaults(func=cmd_loop)


def _add_schema_parser(sub: Any) -> None:
    """``ymir-exc schema``'s arguments."""
    sc = sub.add_parser(
        "schema",
        help="print the JSON Schema of each file format with a pydantic model (not config.yaml, segmentation)",
        description=(
            "Print, as one JSON object, the JSON Schema of: env.yaml, result.yaml, result.yaml (legacy, "
            "protocol < 1.0.0), result.tsv line, infer-result.json (detection), infer-result.json box, "
            "monitor.txt, ymir-info.yaml. The schemas hold each field's simple rules (types, ranges, "
            "patterns); the cross-field rules (best_stage_name names the best stage, a model_stages key "
            "equals its stage_name, -1 only for a metric that is not the stage's primary one, a class "
            "name is one of config.yaml's class_names) are checked by the pydantic models only. "
            "config.yaml and the COCO segmentation result have no schema: see docs/contract.md."
        ),
    )
    sc.set_defaults(func=cmd_schema)


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM handler of :func:`main`: take the Ctrl-C path (see ``runtime.Terminated``)."""
    from ymir_exc.harness.runtime import Terminated

    global _SIGNAL
    _SIGNAL = signum
    raise Terminated(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``ymir-exc`` command: parse ``argv`` (default ``sys.argv[1:]``) and run the command
    with the exit-status policy of the module docstring (SIGTERM handled as Ctrl-C, exit 143)."""
    import signal

    global _JSON_MODE, _JSON_WANTED, _SIGNAL
    argv = list(sys.argv[1:] if argv is None else argv)
    _JSON_WANTED = "--json" in argv
    _SIGNAL = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (main() called from a library's thread)
        previous = None
    try:
        try:
            args = build_parser().parse_args(argv)
        except BrokenPipeError:  # `ymir-exc --help | head -1`: the text was for a reader who left
            from ymir_exc.harness.output import silence

            silence(sys.stdout)
            return 0
        except KeyboardInterrupt:
            return _interrupted_status()
        _JSON_MODE = bool(getattr(args, "json", False))
        return guarded(args.func, args)
    finally:
        _JSON_MODE = _JSON_WANTED = False
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


#: errors of the input (files, arguments, packages), shown as one line with exit status 2
INPUT_ERRORS = (
    YmirExcError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    ValueError,
    RuntimeError,
)


def guarded(func: Any, args: argparse.Namespace) -> int:
    """Run a command with the exit-status policy of the module docstring: a named input error is
    one line and exit 2; Ctrl-C exits 130, SIGTERM 143; anything else is an internal error: one
    line naming a log file (``$YMIR_EXC_LOG_DIR``, else the temp folder) that holds the traceback,
    exit 70. With ``--json`` the command's document (``args.json_doc``) is printed on stdout; a
    command that ends in an error without one prints ``{"error": ..., "exit_status": N}``.
    Output to a closed pipe never ends the command (see :mod:`ymir_exc.harness.output`)."""
    error: str | None = None
    try:
        code = int(func(args))
    except KeyboardInterrupt:
        code = _interrupted_status()
        error = "terminated (SIGTERM)" if _SIGNAL else "interrupted (Ctrl-C)"
        _err(f"ymir-exc: {error}")
    except INPUT_ERRORS as e:
        code, error = EXIT_USAGE, str(e)
        _err(f"ymir-exc: error: {e}")
    except Exception as e:
        code, error = _internal_error(e), f"internal error: {type(e).__name__}: {e}"
    if _JSON_MODE:
        from ymir_exc.harness.output import write_line

        doc = getattr(args, "json_doc", None)
        if doc is None and error is not None:
            doc = {"error": error, "exit_status": code}
        write_line(json.dumps(doc, indent=2, default=str))
    return code


def _internal_error(e: BaseException) -> int:
    import time
    import traceback

    log_dir = os.environ.get("YMIR_EXC_LOG_DIR") or tempfile.gettempdir()
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    try:
        os.makedirs(log_dir, exist_ok=True)
        fd, log = tempfile.mkstemp(
            prefix=f"ymir-exc-crash-{time.strftime('%Y%m%d%H%M%S')}-", suffix=".log", dir=log_dir
        )
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"ymir-exc {__version__}; argv {sys.argv!r}\n{text}")
        where = f"traceback in {log}"
    except OSError as le:
        where = f"could not write a log file ({le})"
    _err(f"ymir-exc: internal error: {type(e).__name__}: {e}; {where}")
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
