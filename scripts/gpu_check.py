"""GPU check of det-yolo-tmi on a machine with no network (run through scripts/gpu-check.sh).

The machine brings Python 3.12 with a CUDA build of torch + torchvision, OpenCV (headless),
matplotlib, scipy, PyYAML, Pillow, psutil, tensorboard and rich; what is missing (Ultralytics,
pydantic, easydict, tensorboardX, ijson, ymir-exc, ...) is installed from ``--wheels DIR``
(made beforehand by scripts/gpu-wheels.sh) into a venv that sees the system's packages. Then,
on one GPU (``--gpu-id``, default 0):

1. ``ymir-exc run templates/det-yolo-tmi --gpu-id 0``: training on the bundled trees sample
   (fixed epochs, no early stop), mining (entropy) and inference with its model over the
   candidate images bench/ uses (the sample's tiles in their 8 flips / rotations);
2. the plain Ultralytics calls of bench's ``yolo`` group (bench/yolo_plain.py:
   ``YOLO(...).train`` / ``.predict``) with the same data and arguments on the same device;

and prints one table: seconds per epoch (median, first epoch left out), images/s of mining and
of inference (the forward passes: the executor's own figure; for plain ``predict``, its loop),
the GPU memory peak (``nvidia-smi`` sampled every 0.2 s, minus the memory in use before the
run) and the best validation mAP50. ``--quick``: fewer epochs and candidates (sized for under 2
minutes on a recent GPU, the full run for under 5; not yet measured on one). ``--cpu`` rehearses
every step on the CPU, ``--no-install`` uses ``--python`` as it is (no venv). ``--dry-run``
prints the plan (``--wheels`` optional there). Wheels made for another Python (their ``cp312``
tag against a Python 3.11 ``--python``) are reported with the ``--python`` to use, before
anything is installed.

Exit status: 0 done, 2 bad arguments, a missing wheels folder or wheels for another Python, 1 a
step failed.
"""

from __future__ import annotations

import argparse
import csv
import glob
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "templates" / "det-yolo-tmi"
YOLO_PLAIN = REPO / "bench" / "yolo_plain.py"

#: (epochs, candidate images) of a full and of a --quick run
SIZES = {"full": (30, 472), "quick": (10, 118)}
IMG_SIZE = 320
TRAIN_BATCH = 16
PREDICT_BATCH = 32
#: the distributions the venv must have after the install (checked by import)
NEEDED_IMPORTS = ("torch", "torchvision", "ultralytics", "ymir_exc.cli", "pydantic", "easydict", "tensorboardX")


class CheckError(RuntimeError):
    """A step of the check failed (its message says which and where the log is)."""


# ------------------------------------------------------------------ arguments, plan


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the arguments; exits with status 2 (argparse's) when they are wrong,
    including a ``--wheels`` that is not a folder holding ``.whl`` files."""
    ap = argparse.ArgumentParser(
        prog="scripts/gpu-check.sh",
        description="det-yolo-tmi on a GPU, offline: install the missing wheels into a venv, train / mine / "
        "infer through ymir-exc run --gpu-id and with plain Ultralytics, print one table.",
    )
    ap.add_argument(
        "--wheels",
        metavar="DIR",
        help="folder of wheels made by scripts/gpu-wheels.sh (installed with --no-index --no-deps); "
        "required except with --dry-run",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"{SIZES['quick'][0]} epochs, {SIZES['quick'][1]} candidates (default "
        f"{SIZES['full'][0]} epochs, {SIZES['full'][1]} candidates)",
    )
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit; install and run nothing")
    ap.add_argument("--gpu-id", default="0", help="the GPU to use (default 0)")
    ap.add_argument(
        "--python", default=sys.executable, help="the Python with torch (CUDA) to build the venv on (default: this one)"
    )
    ap.add_argument(
        "--venv",
        default=os.path.join(tempfile.gettempdir(), "ymir-gpu-check-venv"),
        help="the venv (made with --system-site-packages; reused when present)",
    )
    ap.add_argument("--work", default=None, help="work folder (default: a new temp folder)")
    ap.add_argument(
        "--no-install",
        action="store_true",
        help="no venv, no install: use --python as it is (it must import everything already)",
    )
    ap.add_argument(
        "--cpu",
        action="store_true",
        help="rehearse every step on the CPU (no GPU figures): to try the script on a machine without a GPU",
    )
    args = ap.parse_args(argv)
    if not re.fullmatch(r"\d+", args.gpu_id):
        ap.error(f"--gpu-id: one GPU index, e.g. 0; got {args.gpu_id!r}")
    if args.wheels is None:
        if not args.dry_run:
            ap.error("--wheels DIR is required (except with --dry-run); make DIR with: bash scripts/gpu-wheels.sh DIR")
        args.epochs, args.candidates = SIZES["quick" if args.quick else "full"]
        return args
    if not os.path.isdir(args.wheels):
        ap.error(f"--wheels {args.wheels}: no such folder (make it with: bash scripts/gpu-wheels.sh DIR)")
    if not wheel_files(args.wheels):
        ap.error(f"--wheels {args.wheels}: no .whl files in it (make them with: bash scripts/gpu-wheels.sh DIR)")
    args.epochs, args.candidates = SIZES["quick" if args.quick else "full"]
    return args


def wheel_files(folder: str | None) -> list[str]:
    """The ``.whl`` files of ``folder``, sorted ([] for None)."""
    return sorted(glob.glob(os.path.join(folder, "*.whl"))) if folder else []


def cpython_tags(wheels: Sequence[str]) -> dict[str, list[str]]:
    """``{"cp312": [wheel file names]}``: the CPython version tags of compiled wheels (PEP 427
    file names ``name-version[-build]-python-abi-platform.whl``; ``py3`` wheels have none)."""
    out: dict[str, list[str]] = {}
    for w in wheels:
        parts = os.path.basename(w)[: -len(".whl")].split("-")
        if len(parts) < 5:
            continue
        for tag in parts[-3].split("."):
            if re.fullmatch(r"cp\d+", tag):
                out.setdefault(tag, []).append(os.path.basename(w))
    return out


def python_version(python: str) -> str | None:
    """``"3.12"`` for the interpreter ``python`` (run once), None when it does not run."""
    try:
        proc = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and re.fullmatch(r"\d+\.\d+", out) else None


def tag_mismatch(args: argparse.Namespace) -> str | None:
    """Why the wheels cannot go into a venv on ``--python`` (their CPython tag is another
    version's), with the ``--python`` to give instead; None when they fit, or nothing is installed."""
    if args.no_install or not args.wheels:
        return None
    tags = cpython_tags(wheel_files(args.wheels))
    have = python_version(args.python)
    if not tags or have is None:
        return None
    want = "cp" + have.replace(".", "")
    wrong = {t: ws for t, ws in tags.items() if t != want}
    if not wrong:
        return None
    tag, ws = sorted(wrong.items())[0]
    version = f"{tag[2]}.{tag[3:]}"
    return (
        f"the wheels in {args.wheels} are for CPython {version} ({tag}: {', '.join(ws[:3])}) but --python "
        f"{args.python} is Python {have}: pip would refuse them. Give --python python{version} (a Python "
        f"{version} with torch), or make the wheels for {have}: bash scripts/gpu-wheels.sh --python-version "
        f"{have} DIR"
    )


def dist_name(wheel: str) -> str:
    """The normalised distribution name of a wheel file name (PEP 427 / 503):
    ``pydantic_core-2.50.5-cp312-....whl`` -> ``pydantic-core``."""
    return re.sub(r"[-_.]+", "-", os.path.basename(wheel).split("-", 1)[0]).lower()


def device(args: argparse.Namespace) -> str:
    """Ultralytics' device string: the GPU index, or ``cpu`` for --cpu."""
    return "cpu" if args.cpu else args.gpu_id


def venv_python(venv: str) -> str:
    """The python of the venv folder ``venv``."""
    return os.path.join(venv, "bin", "python")


def plan(args: argparse.Namespace) -> list[str]:
    """The steps, as printed by --dry-run and before a real run."""
    wheels = [os.path.basename(w) for w in wheel_files(args.wheels)]
    py = args.python if args.no_install else venv_python(args.venv)
    cfg = f"epochs={args.epochs} img_size={IMG_SIZE} batch_size={TRAIN_BATCH} patience=0"
    gpu = "(CPU rehearsal)" if args.cpu else f"--gpu-id {args.gpu_id}"
    source = (
        (
            f"install from {args.wheels}, --no-index --no-deps, the wheels whose distribution the venv lacks: "
            + ", ".join(wheels)
        )
        if args.wheels
        else "install from --wheels DIR (not given; make it with: bash scripts/gpu-wheels.sh DIR), --no-index --no-deps"
    )
    install = (
        [f"no venv, no install (--no-install): {py} as it is"]
        if args.no_install
        else [f"venv {args.venv} on {args.python} with --system-site-packages (kept if present)", source]
    )
    return install + [
        f"check: {py} imports {', '.join(NEEDED_IMPORTS)}; " + ("CPU" if args.cpu else f"torch sees GPU {args.gpu_id}"),
        f"ours: {py} -m ymir_exc.cli run {TEMPLATE} {gpu} --task training ({cfg}, trees sample)",
        f"ours: ... --task mining (entropy) and --task infer, {args.candidates} candidates, "
        f"batch {PREDICT_BATCH}, {IMG_SIZE} px",
        f"plain: {py} {YOLO_PLAIN} (bench's yolo group): YOLO('yolov8n.yaml').train(device={device(args)!r}, same "
        f"data and arguments), YOLO(best.pt).predict on the same candidates",
        "GPU memory: nvidia-smi --query-gpu=memory.used every 0.2 s during each run",
        "print one table: s/epoch, mining images/s, inference images/s, GPU memory peak, mAP50",
    ]


# ------------------------------------------------------------------ processes


def run(argv: list[str], log: Path, env: dict[str, str] | None = None, what: str = "") -> str:
    """Run ``argv``, output to ``log``; its output, or CheckError naming the log."""
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    text = log.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        raise CheckError(f"{what or argv[0]} failed (exit {proc.returncode}); log {log}:\n{text[-3000:]}")
    return text


class GpuMemory:
    """Peak GPU memory in use (MiB) while the ``with`` block runs, above the level before it,
    from ``nvidia-smi`` every 0.2 s; ``peak`` is None when nvidia-smi is not there."""

    def __init__(self, gpu: str | None):
        self.gpu = gpu
        self.peak: int | None = None
        self._stop = threading.Event()
        self._base = None

    def _read(self) -> int | None:
        if self.gpu is None:
            return None
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", self.gpu],
                capture_output=True,
                text=True,
                timeout=5,
            )
            return int(out.stdout.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return None

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            v = self._read()
            if v is not None and self._base is not None:
                self.peak = max(self.peak or 0, v - self._base)

    def __enter__(self) -> GpuMemory:
        self._base = self._read()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------ figures from the outputs


def peak(*values: float | None) -> float | None:
    """The largest of the values that are not None; None when none is there."""
    known = [v for v in values if v is not None]
    return max(known) if known else None


def epoch_seconds(results_csv: Path) -> float | None:
    """Median seconds per epoch from Ultralytics' results.csv (its ``time`` column is cumulative
    seconds), the first epoch (warm-up, dataloader start) left out when there are more."""
    with open(results_csv, newline="", encoding="utf-8") as f:
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
    times = [float(r["time"]) for r in rows if r.get("time")]
    if not times:
        return None
    steps = [b - a for a, b in itertools.pairwise(times)]
    return statistics.median(steps) if steps else times[0]


def best_map50(results_csv: Path) -> float | None:
    """The best ``metrics/mAP50(B)`` of a results.csv."""
    with open(results_csv, newline="", encoding="utf-8") as f:
        vals = [
            float(r["metrics/mAP50(B)"])
            for r in ({k.strip(): v for k, v in row.items()} for row in csv.DictReader(f))
            if r.get("metrics/mAP50(B)")
        ]
    return max(vals) if vals else None


_RATE = re.compile(r"(mining|inference) done in [0-9.]+ s \(([0-9.]+) images/s\)")
_HASH = re.compile(r"model hash: ([0-9a-f]{40})")


def executor_rate(text: str, task: str) -> float | None:
    """images/s from the executor's ``mining done in X s (Y images/s)`` / ``inference done ...`` line."""
    rates = [float(m.group(2)) for m in _RATE.finditer(text) if m.group(1) == task]
    return rates[-1] if rates else None


def model_hash(text: str) -> str:
    m = _HASH.search(text)
    if not m:
        raise CheckError(f"no 'model hash' in the training output:\n{text[-2000:]}")
    return m.group(1)


def fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def table(rows: dict[str, dict[str, float | None]]) -> str:
    """The result table (plain text, also valid markdown)."""
    head = ["", "s / epoch", "mining images/s", "inference images/s", "GPU memory peak (MiB)", "mAP50 (val)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {fmt(r.get('epoch_s'), '.2f')} | {fmt(r.get('mining_ips'), '.0f')} | "
            f"{fmt(r.get('infer_ips'), '.0f')} | {fmt(r.get('mem_mib'), '.0f')} | {fmt(r.get('map50'), '.3f')} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ steps


def make_venv(args: argparse.Namespace, log_dir: Path) -> str:
    """The venv with the missing wheels installed (``--python`` itself with --no-install); its python."""
    py = args.python if args.no_install else venv_python(args.venv)
    if not args.no_install:
        if not os.path.exists(py):
            run([args.python, "-m", "venv", "--system-site-packages", args.venv], log_dir / "venv.log", what="venv")
        install_missing(args, py, log_dir)
    gpu_test = (
        (
            "n = torch.cuda.device_count(); assert torch.cuda.is_available() and n > %s, "
            "f'torch {torch.__version__} sees {n} GPU(s)'; " % args.gpu_id
        )
        if not args.cpu
        else ""
    )
    name = "'CPU'" if args.cpu else f"torch.cuda.get_device_name({args.gpu_id})"
    check = (
        "import importlib, torch; [importlib.import_module(m) for m in %r]; %s"
        "print('torch', torch.__version__, 'cuda', torch.version.cuda, %s)" % (list(NEEDED_IMPORTS), gpu_test, name)
    )
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(log_dir / "config"))
    print(
        run([py, "-c", check], log_dir / "imports.log", env=env, what="import check").strip().splitlines()[-1],
        flush=True,
    )
    return py


def install_missing(args: argparse.Namespace, py: str, log_dir: Path) -> None:
    """pip install, from --wheels only and without dependencies, the wheels whose distribution the
    venv does not have (ymir-exc always: it is this checkout's)."""
    have = run(
        [
            py,
            "-c",
            "import importlib.metadata as m, re, json; print(json.dumps(sorted("
            "re.sub(r'[-_.]+', '-', d.metadata['Name']).lower() for d in m.distributions() if d.metadata['Name'])))",
        ],
        log_dir / "dists.log",
        what="listing installed distributions",
    )
    installed = set(json.loads(have.strip().splitlines()[-1]))
    missing = [w for w in wheel_files(args.wheels) if dist_name(w) not in installed or dist_name(w) == "ymir-exc"]
    if missing:
        print("installing: " + ", ".join(os.path.basename(w) for w in missing), flush=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
        run(
            [py, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--force-reinstall", *missing],
            log_dir / "pip.log",
            env=env,
            what="pip install of the wheels",
        )


def candidates(py: str, work: Path, n: int) -> dict[str, str]:
    """bench's candidate images (the trees tiles in 8 flips / rotations): data.yaml and list file."""
    code = (
        "import sys, json, pathlib; sys.path.insert(0, %r); import bench as b\n"
        "class C: cache = pathlib.Path(%r); log = staticmethod(print)\n"
        "d, l = b.yolo_candidates(C, %d); print(json.dumps({'data': d, 'list': l}))"
        % (str(REPO / "bench"), str(work / "cache"), n)
    )
    out = run([py, "-c", code], work / "candidates.log", what="candidate images")
    return json.loads(out.strip().splitlines()[-1])


def ours(py: str, args: argparse.Namespace, work: Path, cand: dict[str, str]) -> dict[str, float | None]:
    env = dict(os.environ, YOLO_OFFLINE="1")
    store = work / "models"
    base = [
        py,
        "-m",
        "ymir_exc.cli",
        "run",
        str(TEMPLATE),
        "--runtime",
        "local",
        *([] if args.cpu else ["--gpu-id", args.gpu_id]),
        "--model-location",
        str(store),
        "--quiet",
    ]
    cfg = work / "ours-train.yaml"
    cfg.write_text(
        json.dumps(
            {
                "epochs": args.epochs,
                "img_size": IMG_SIZE,
                "batch_size": TRAIN_BATCH,
                "patience": 0,
                "save_period": 0,
                "workers": 4,
            }
        ),
        encoding="utf-8",
    )
    w = work / "ours-train"
    print(f"ours: training, {args.epochs} epochs ...", flush=True)
    with GpuMemory(None if args.cpu else args.gpu_id) as mem:
        text = run(
            base + ["--task", "training", "--config", str(cfg), "--work-dir", str(w)],
            work / "ours-train.log",
            env=env,
            what="ymir-exc run --task training",
        )
    res: dict[str, float | None] = {"mem_mib": mem.peak}
    csv_path = w / "out" / "ultralytics" / "train" / "results.csv"
    res["epoch_s"] = epoch_seconds(csv_path)
    res["map50"] = best_map50(csv_path)
    model = model_hash(text)
    for task, key in (("mining", "mining_ips"), ("infer", "infer_ips")):
        tcfg = work / f"ours-{task}.yaml"
        tcfg.write_text(
            json.dumps(
                {"img_size": IMG_SIZE, "batch_size": PREDICT_BATCH, "workers": 4, "mining_algorithm": "entropy"}
                if task == "mining"
                else {"img_size": IMG_SIZE, "batch_size": PREDICT_BATCH, "workers": 4}
            ),
            encoding="utf-8",
        )
        tw = work / f"ours-{task}"
        print(f"ours: {task}, {args.candidates} candidates ...", flush=True)
        with GpuMemory(None if args.cpu else args.gpu_id) as mem:
            text = run(
                base
                + [
                    "--task",
                    task,
                    "--config",
                    str(tcfg),
                    "--work-dir",
                    str(tw),
                    "--model",
                    model,
                    "--dataset",
                    cand["data"],
                ],
                work / f"ours-{task}.log",
                env=env,
                what=f"ymir-exc run --task {task}",
            )
        log_file = tw / "out" / "ymir-executor-out.log"
        full = text + (log_file.read_text(encoding="utf-8", errors="replace") if log_file.exists() else "")
        res[key] = executor_rate(full, "mining" if task == "mining" else "inference")
        res["mem_mib"] = peak(res["mem_mib"], mem.peak)
    res["weights"] = str(w / "out" / "models" / "best.pt")  # type: ignore[assignment]
    res["dataset"] = str(w / "out" / "yolo_dataset")  # type: ignore[assignment]
    return res


def plain(py: str, args: argparse.Namespace, work: Path, cand: dict[str, str], dataset: str) -> dict[str, float | None]:
    d = work / "plain"
    d.mkdir(exist_ok=True)
    data = d / "dataset"
    shutil.copytree(dataset, data, symlinks=True, ignore=shutil.ignore_patterns("*.cache"))
    for name in ("data.yaml", "train.txt", "val.txt"):
        p = data / name
        if p.exists():
            p.write_text(p.read_text(encoding="utf-8").replace(dataset, str(data)), encoding="utf-8")
    train_args = {
        "data": str(data / "data.yaml"),
        "epochs": args.epochs,
        "batch": TRAIN_BATCH,
        "imgsz": IMG_SIZE,
        "lr0": 0.002,
        "optimizer": "AdamW",
        "patience": 0,
        "workers": 4,
        "close_mosaic": 10,
        "device": device(args),
        "cache": False,
        "plots": False,
        "seed": 0,
        "exist_ok": True,
        "project": str(d / "runs"),
        "name": "train",
    }
    spec = d / "train.json"
    spec.write_text(
        json.dumps({"mode": "train", "model": "yolov8n.yaml", "args": train_args, "config_dir": str(d / "config")}),
        encoding="utf-8",
    )
    print(f"plain: YOLO().train, {args.epochs} epochs ...", flush=True)
    with GpuMemory(None if args.cpu else args.gpu_id) as mem:
        out = run([py, str(YOLO_PLAIN), str(spec)], d / "train.log", what="plain Ultralytics training")
    res: dict[str, float | None] = {"mem_mib": mem.peak}
    csv_path = d / "runs" / "train" / "results.csv"
    res["epoch_s"] = epoch_seconds(csv_path)
    res["map50"] = best_map50(csv_path)
    weights = json.loads(out.strip().splitlines()[-1])["best"]
    for task, key, conf, iou in (("mining", "mining_ips", 0.05, 0.7), ("infer", "infer_ips", 0.25, 0.7)):
        spec = d / f"{task}.json"
        spec.write_text(
            json.dumps(
                {
                    "mode": "predict",
                    "model": weights,
                    "source": cand["list"],
                    "args": {
                        "conf": conf,
                        "iou": iou,
                        "max_det": 300,
                        "imgsz": IMG_SIZE,
                        "batch": PREDICT_BATCH,
                        "device": device(args),
                    },
                    "config_dir": str(d / "config"),
                }
            ),
            encoding="utf-8",
        )
        print(f"plain: predict ({task} thresholds), {args.candidates} candidates ...", flush=True)
        with GpuMemory(None if args.cpu else args.gpu_id) as mem:
            out = run([py, str(YOLO_PLAIN), str(spec)], d / f"{task}.log", what=f"plain Ultralytics predict ({task})")
        r = json.loads(out.strip().splitlines()[-1])
        res[key] = r["images"] / r["loop_seconds"] if r.get("loop_seconds") else None
        res["mem_mib"] = peak(res["mem_mib"], mem.peak)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    steps = plan(args)
    print("gpu-check plan:")
    for i, s in enumerate(steps, 1):
        print(f"  {i}. {s}")
    mismatch = tag_mismatch(args)
    if mismatch:
        print(f"gpu-check: warning: {mismatch}", file=sys.stderr, flush=True)
    if args.dry_run:
        return 0
    if mismatch:
        print("gpu-check: stopped before installing anything", file=sys.stderr)
        return 2
    t0 = time.time()
    work = Path(args.work or tempfile.mkdtemp(prefix="ymir-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        py = make_venv(args, work)
        cand = candidates(py, work, args.candidates)
        r_ours = ours(py, args, work, cand)
        r_plain = plain(py, args, work, cand, str(r_ours.pop("dataset")))
    except CheckError as e:
        print(f"gpu-check: {e}", file=sys.stderr)
        return 1
    if args.cpu:
        where = "CPU (rehearsal)"
    else:
        try:
            name = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", args.gpu_id],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.strip()
                or "?"
            )
        except (OSError, subprocess.SubprocessError):
            name = "?"
        where = f"GPU {args.gpu_id} ({name})"
    print(
        f"\ndet-yolo-tmi on {where}, {time.strftime('%Y-%m-%d')}: yolov8n from scratch on the "
        f"trees sample, {args.epochs} epochs at {IMG_SIZE} px, batch {TRAIN_BATCH}; mining (entropy) and "
        f"inference over {args.candidates} candidates, batch {PREDICT_BATCH}"
    )
    print(table({"ymir-exc run (det-yolo-tmi)": r_ours, "plain Ultralytics (bench/yolo_plain.py)": r_plain}))
    print(f"\n({time.time() - t0:.0f} s; work folder {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
