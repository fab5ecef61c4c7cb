"""Side-by-side benchmarks: our ``ymir_exc`` vs upstream ``ymir-exc==1.1.0.523`` vs plain Python.

Run it through ``bench/run`` (see bench/README.md). Every measurement is a fresh subprocess
(``bench/worker.py``) with its own temporary env.yaml / config.yaml; the sides alternate within
each repeat and the table shows medians. Exit status: 0 all targets met (or ``--smoke``),
1 a target missed, 2 a measurement failed.

Rows come from a registry (``GROUPS``): a group measures once and yields one or more rows, or
yields rows marked skipped with the reason (the Ultralytics rows until their template exists).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORKER = BENCH / "worker.py"
UPSTREAM_REQ = "ymir-exc==1.1.0.523"
CLASS_NAMES = ["person", "cat", "dog", "tree", "car"]

FULL_SIZES = {
    "monitor": 10_000,
    "monitor_lines": 100,
    "mining": 1_000_000,
    "infer": 100_000,
    "item_paths": 1_000_000,
    "model_stage": 100,
    "prepare": 10_000,
    "import_runs": 15,
    "yolo_candidates": 472,
}
SMOKE_SIZES = {
    "monitor": 200,
    "monitor_lines": 20,
    "mining": 2_000,
    "infer": 200,
    "item_paths": 2_000,
    "model_stage": 15,
    "prepare": 60,
    "import_runs": 1,
    "yolo_candidates": 24,
}


class BenchError(RuntimeError):
    """A measurement could not be taken (a worker failed)."""


# ------------------------------------------------------------------ processes


def spawn(argv: Sequence[str], *, env: dict[str, str], cwd: str, log: str) -> tuple[float, int]:
    """Run ``argv`` to completion; returns (wall seconds, exit status).

    Peak memory is not taken from here: a posix_spawn'ed (vfork) child's ru_maxrss includes the
    parent's peak. Workers report their own VmHWM; other commands go through ``peak_rss``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, fd, 1),
            (os.POSIX_SPAWN_DUP2, fd, 2),
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        ]
        exe = shutil.which(argv[0]) if os.sep not in argv[0] else argv[0]
        if exe is None:
            raise BenchError(f"{argv[0]} not found")
        old = os.getcwd()
        os.chdir(cwd)  # posix_spawn has no cwd argument
        try:
            t0 = time.perf_counter()
            pid = os.posix_spawn(exe, list(argv), env, file_actions=actions)
        finally:
            os.chdir(old)
        _, status = os.waitpid(pid, 0)
        wall = time.perf_counter() - t0
    finally:
        os.close(fd)
    return wall, os.waitstatus_to_exitcode(status)


def peak_rss(argv: Sequence[str], *, env: dict[str, str], cwd: str) -> int | None:
    """Peak RSS (KiB) of one untimed run of ``argv``, through ``/usr/bin/time -f %M``; None
    without it."""
    if not os.access("/usr/bin/time", os.X_OK):
        return None
    out = os.path.join(cwd, ".peak-rss")
    r = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", out, *argv],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with open(out, encoding="ascii") as f:
            return int(f.read().split()[-1]) if r.returncode == 0 else None
    except (OSError, ValueError, IndexError):
        return None
    finally:
        if os.path.exists(out):
            os.unlink(out)


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}


# ------------------------------------------------------------------ context


@dataclass
class Context:
    smoke: bool
    repeat: int
    sizes: dict[str, int]
    cache: Path
    tmp_root: str
    ours_python: str
    upstream_python: str | None
    upstream_note: str
    only: list[str] | None = None
    #: scale group: also the streamed prepare rows at 1,000,000 images (--scale-prepare-1m)
    prepare_1m: bool = False
    verbose: bool = False
    #: the YOLO rows' device: "cpu" or a GPU index ("0"); ours gets it as ``ymir-exc run --gpu-id``
    device: str = "cpu"
    cleanup: list[str] = field(default_factory=list)

    def side_python(self, side: str) -> str:
        if side == "upstream":
            assert self.upstream_python
            return self.upstream_python
        return self.ours_python

    def side_env(self, side: str) -> dict[str, str]:
        env = _base_env()
        if side != "upstream":
            env["PYTHONPATH"] = str(REPO)  # measure this checkout, whatever is installed
        return env

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)


def ensure_upstream(cache: Path, offline_ok: bool) -> tuple[str | None, str]:
    """A venv holding upstream ymir-exc at ``cache/venv-upstream``; (python, note)."""
    venv = cache / "venv-upstream"
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import importlib.metadata as m, ymir_exc.result_writer; print(m.version('ymir-exc'))"]
    if py.exists():
        r = subprocess.run(probe, capture_output=True, text=True, env=_base_env(), cwd=str(cache))
        if r.returncode == 0 and r.stdout.strip() == UPSTREAM_REQ.split("==")[1]:
            return str(py), f"upstream {UPSTREAM_REQ} from {venv}"
        shutil.rmtree(venv, ignore_errors=True)
    print(f"bench: creating {venv} with {UPSTREAM_REQ} ...", file=sys.stderr, flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
        r = subprocess.run(
            [
                str(py),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--timeout",
                "15",
                "--retries",
                "1",
                UPSTREAM_REQ,
            ],
            capture_output=True,
            text=True,
            env=_base_env(),
            timeout=300,
        )
        if r.returncode != 0:
            raise RuntimeError(((r.stderr or r.stdout).strip().splitlines() or ["pip failed"])[-1])
        r = subprocess.run(probe, capture_output=True, text=True, env=_base_env(), cwd=str(cache))
        if r.returncode != 0:
            raise RuntimeError((r.stderr.strip().splitlines() or ["import failed"])[-1])
    except (subprocess.SubprocessError, RuntimeError, OSError) as e:
        shutil.rmtree(venv, ignore_errors=True)
        note = f"upstream side SKIPPED: could not install {UPSTREAM_REQ} into {venv} ({e})"
        if not offline_ok:
            raise BenchError(note) from None
        return None, note
    return str(py), f"upstream {UPSTREAM_REQ} installed into {venv}"


# ------------------------------------------------------------------ inputs (cached)


def _asset_path(i: int) -> str:
    import hashlib

    h = hashlib.sha1(i.to_bytes(8, "little")).hexdigest()
    return f"/in/assets/{h[-2:]}/{h}.jpg"


def index_file(ctx: Context, n: int) -> str:
    """A training index of ``n`` lines ``<image>\\t<annotation>`` (paths need not exist)."""
    path = ctx.cache / "data" / f"train-index-{n}.tsv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(n):
            a = _asset_path(i)
            lines.append(f"{a}\t{a.replace('/assets/', '/annotations/')[:-4]}.txt\n")
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(lines), encoding="utf-8")
        tmp.replace(path)
    return str(path)


def image_tree(ctx: Context, n: int) -> tuple[str, str]:
    """``n`` small distinct JPEGs under ``cache/data/images-n/images`` plus a listing (boxes)."""
    import random

    root = ctx.cache / "data" / f"images-{n}"
    listing = root / "listing.json"
    if not listing.exists():
        from PIL import Image

        ctx.log(f"bench: generating {n} JPEGs under {root} (once) ...")
        shutil.rmtree(root, ignore_errors=True)
        img_dir = root / "images"
        img_dir.mkdir(parents=True)
        rnd = random.Random(7)
        items = []
        for i in range(n):
            im = Image.new("RGB", (64, 48), (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
            im.putpixel((i % 64, (i // 64) % 48), (i % 256, (i // 256) % 256, 255))  # distinct bytes
            p = img_dir / f"img_{i:06d}.jpg"
            im.save(p, quality=80)
            boxes = []
            for _ in range(rnd.randrange(0, 4)):
                x, y = rnd.randrange(0, 40), rnd.randrange(0, 30)
                boxes.append(
                    [rnd.randrange(len(CLASS_NAMES)), x, y, rnd.randrange(1, 64 - x), rnd.randrange(1, 48 - y)]
                )
            items.append([str(p), boxes])
        listing.write_text(json.dumps({"class_names": CLASS_NAMES, "items": items}), encoding="utf-8")
    return str(root / "images"), str(listing)


# ------------------------------------------------------------------ one run


def run_worker(ctx: Context, side: str, workload: str, n: int, root: str | None = None, **extra) -> dict:
    # work dirs are deleted at the end of the whole run, not between runs: deleting files costs
    # the file system work later (on a disk mounted with discard, a lot), which would land in
    # the next measurement
    d = tempfile.mkdtemp(prefix=f"{workload}-{side}-", dir=root or ctx.tmp_root)
    if True:
        in_dir, out_dir = f"{d}/in", f"{d}/out"
        os.makedirs(in_dir)
        os.makedirs(out_dir)
        index = extra.pop("index", "")
        env_yaml = (
            "protocol_version: 1.1.0\ntask_id: t-bench\nrun_training: true\nrun_mining: false\nrun_infer: false\n"
            "manifest_file: /img-man/manifest.yaml\n"
            f"input:\n  root_dir: {in_dir}\n  assets_dir: {in_dir}/assets\n  annotations_dir: {in_dir}/annotations\n"
            f"  models_dir: {in_dir}/models\n  config_file: {in_dir}/config.yaml\n"
            f"  training_index_file: '{index}'\n  val_index_file: '{index}'\n  candidate_index_file: ''\n"
            f"output:\n  root_dir: {out_dir}\n  models_dir: {out_dir}/models\n"
            f"  tensorboard_dir: {out_dir}/tensorboard\n"
            f"  training_result_file: {out_dir}/models/result.yaml\n  mining_result_file: {out_dir}/result.tsv\n"
            f"  infer_result_file: {out_dir}/infer-result.json\n  monitor_file: {out_dir}/monitor.txt\n"
            f"  executor_log_file: {out_dir}/ymir-executor-out.log\n"
        )
        with open(f"{in_dir}/env.yaml", "w", encoding="utf-8") as f:
            f.write(env_yaml)
        with open(f"{in_dir}/config.yaml", "w", encoding="utf-8") as f:
            f.write("class_names: [" + ", ".join(CLASS_NAMES) + "]\ngpu_id: ''\ngpu_count: 0\ntask_id: t-bench\n")
        spec = {
            "side": side,
            "workload": workload,
            "n": n,
            "env_file": f"{in_dir}/env.yaml",
            "config_file": f"{in_dir}/config.yaml",
            "out_dir": out_dir,
            "task_id": "t-bench",
            "result": f"{d}/result.json",
            "work_dir": f"{d}/work",
            **extra,
        }
        with open(f"{d}/spec.json", "w", encoding="utf-8") as f:
            json.dump(spec, f)
        env = ctx.side_env(side)
        env["DEFAULT_ENV_FILE_PATH"] = spec["env_file"]
        env["DEFAULT_CONFIG_FILE_PATH"] = spec["config_file"]
        wall, code = spawn([ctx.side_python(side), str(WORKER), f"{d}/spec.json"], env=env, cwd=d, log=f"{d}/log.txt")
        if code != 0:
            with open(f"{d}/log.txt", encoding="utf-8", errors="replace") as f:
                tail = f.read()[-3000:]
            raise BenchError(f"{workload} / {side} failed (exit {code}):\n{tail}")
        with open(spec["result"], encoding="utf-8") as f:
            res = json.load(f)
        res["wall"] = wall
        if ctx.verbose:
            ctx.log(
                f"  {workload:12s} {side:9s} {res['seconds']:.4f} s  peak {res['rss_peak_kib'] / 1024:.0f} MiB"
                f" (inputs {res['rss_inputs_kib'] / 1024:.0f} MiB)"
            )
        return res


def alternate(
    ctx: Context, sides: Sequence[str], once: Callable[[str], dict], repeat: int | None = None
) -> dict[str, list[dict]]:
    """``repeat`` (default ``ctx.repeat``) rounds; each round runs every side once, the order
    rotating per round."""
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    for r in range(ctx.repeat if repeat is None else repeat):
        k = r % len(sides)
        for side in list(sides[k:]) + list(sides[:k]):
            runs[side].append(once(side))
    return runs


# ------------------------------------------------------------------ rows


@dataclass
class Row:
    name: str
    ours: float | None = None  # seconds (median)
    theirs: float | None = None
    theirs_label: str = "upstream"
    target: float | None = None  # ratio ours / theirs must be <= target
    target_text: str = ""
    ok: bool | None = None  # None: not judged (skipped)
    rss_ours: int | None = None  # KiB
    rss_theirs: int | None = None
    note: str = ""
    skipped: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.theirs:
            return None
        return self.ours / self.theirs


def _median(runs: list[dict], key: str = "seconds") -> float:
    return statistics.median(r[key] for r in runs)


def _peak(runs: list[dict]) -> int | None:
    vals = [r["rss_peak_kib"] for r in runs if r.get("rss_peak_kib")]
    return max(vals) if vals else None


def _ratio_row(
    name: str, runs: dict[str, list[dict]], theirs: str, target: float | None, note: str = "", label: str | None = None
) -> Row:
    row = Row(
        name,
        target=target,
        target_text="(info)" if target is None else f"<= {target:g}",
        theirs_label=label or theirs,
        note=note,
    )
    row.ours, row.rss_ours = _median(runs["ours"]), _peak(runs["ours"])
    if runs.get(theirs):
        row.theirs, row.rss_theirs = _median(runs[theirs]), _peak(runs[theirs])
        row.ok = None if target is None else row.ratio <= target
    else:
        row.skipped = "no upstream venv"
    return row


def _same_output(runs: dict[str, list[dict]], a: str, b: str) -> bool | None:
    oa = [r.get("output", {}).get("sha1") for r in runs.get(a, [])]
    ob = [r.get("output", {}).get("sha1") for r in runs.get(b, [])]
    if not oa or not ob or None in oa or None in ob:
        return None
    return set(oa) == set(ob) and len(set(oa)) == 1


# each group: (key, callable(ctx) -> rows)
SDK_WORKLOADS = [
    # key, row title, target vs upstream, floor vs plain (None: no floor row)
    # monitor and model stage: called once per progress tick / epoch, so no slower than upstream
    # is the target (their fast paths were dropped or never needed)
    ("monitor", "monitor.write_monitor_logger x {n:,}", 1.0, 1.5),
    ("monitor_lines", "  monitor x {n}, every call a new line", None, None),
    # mining: the same bytes as upstream (the shortest repr of each score); the target is "no
    # slower than plain Python writing the same bytes" (the floor row), the ratio to upstream is info
    ("mining", "write_mining_result, {n:,} pairs", None, 1.0),
    ("infer", "write_infer_result, {n:,} images x 10 boxes", 0.3, 1.5),
    ("item_paths", "dataset_reader.item_paths, {n:,} lines", 0.7, None),
    ("model_stage", "write_model_stage x {n} (eviction)", 1.0, 1.5),
]


def sdk_group(key: str, title: str, target: float | None, floor: float | None) -> Callable[[Context], list[Row]]:
    def measure(ctx: Context) -> list[Row]:
        n = ctx.sizes[key]
        extra = {}
        if key == "item_paths":
            extra["index"] = index_file(ctx, n)
        sides = ["ours"] + (["upstream"] if ctx.upstream_python else []) + (["plain"] if floor else [])
        runs = alternate(ctx, sides, lambda side: run_worker(ctx, side, key, n, **dict(extra)))
        name = title.format(n=n)
        same_up = _same_output(runs, "ours", "upstream")
        note = ""
        if same_up is not None:
            note = "same bytes as upstream" if same_up else "output differs from upstream (see README)"
        rows = [_ratio_row(name, runs, "upstream", target, note=note)]
        if floor:
            same = _same_output(runs, "ours", "plain")
            fnote = {True: "identical bytes", False: "BYTES DIFFER from ours", None: ""}[same]
            if key == "monitor":
                fnote = "same line format (timestamps differ)"
            rows.append(
                _ratio_row(f"  floor: {key} vs plain open/write", runs, "plain", floor, note=fnote, label="plain")
            )
            if same is False and key != "monitor":
                rows[-1].ok = False
        return rows

    measure.__name__ = key
    return measure


IMPORT_STMT = "import ymir_exc, ymir_exc.result_writer, ymir_exc.monitor"
HEAVY = ("torch", "torchvision", "ultralytics", "tensorboardX", "PIL", "cv2", "numpy")


def import_group(ctx: Context) -> list[Row]:
    sides = ["ours"] + (["upstream"] if ctx.upstream_python else [])
    d = tempfile.mkdtemp(prefix="import-", dir=ctx.tmp_root)  # cwd: no repo on sys.path
    if True:
        env_path = os.path.join(d, "env.yaml")
        with open(env_path, "w", encoding="utf-8") as f:
            f.write("protocol_version: 1.1.0\ntask_id: t-bench\nrun_training: true\n")

        def once(side: str, stmt: str = IMPORT_STMT) -> dict:
            wall, code = spawn([ctx.side_python(side), "-c", stmt], env=ctx.side_env(side), cwd=d, log=f"{d}/log.txt")
            if code != 0:
                raise BenchError(f"import / {side} failed: {Path(d, 'log.txt').read_text()[-2000:]}")
            return {"seconds": wall}

        for side in sides:  # warm the page cache / pyc once per side, untimed
            once(side)
        reps = max(ctx.sizes["import_runs"], ctx.repeat if not ctx.smoke else 1)
        saved, ctx.repeat = ctx.repeat, reps
        try:
            runs = alternate(ctx, sides, once)
        finally:
            ctx.repeat = saved
        # untimed probe per side: which heavy modules got imported, and the peak RSS
        probe = (
            f"{IMPORT_STMT}; import sys, re; print('modules=' + ','.join(m for m in {HEAVY!r} if m in sys.modules)); "
            "print('rss=' + re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
        )
        probes = {}
        for side in sides:
            r = subprocess.run(
                [ctx.side_python(side), "-c", probe], capture_output=True, text=True, env=ctx.side_env(side), cwd=d
            )
            if r.returncode != 0:
                raise BenchError(f"import probe ({side}) failed: {r.stderr[-2000:]}")
            got = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
            probes[side] = ([m for m in got["modules"].split(",") if m], int(got["rss"]))
    # the one-time cost of a first SDK call on top: ours builds its pydantic validators on first
    # use (defer_build) where upstream builds them at import; both read env.yaml
    first_stmt = (
        f"{IMPORT_STMT}; from ymir_exc import env, settings; settings.DEFAULT_ENV_FILE_PATH = {env_path!r}; "
        "env.get_current_env()"
    )
    saved, ctx.repeat = ctx.repeat, reps
    try:
        first = alternate(ctx, sides, lambda side: once(side, first_stmt))
    finally:
        ctx.repeat = saved
    heavy = probes["ours"][0]
    row = Row(f'python -c "{IMPORT_STMT}"', target=None, target_text="< 150 ms, no torch")
    row.ours, row.rss_ours = _median(runs["ours"]), probes["ours"][1]
    if runs.get("upstream"):
        row.theirs, row.rss_theirs = _median(runs["upstream"]), probes["upstream"][1]
    row.ok = row.ours < 0.150 and "torch" not in heavy
    row.note = f"median of {reps}; heavy modules loaded: {', '.join(heavy) or 'none'}"
    row2 = Row("  the same + first env.yaml read", target=None, target_text="(info)")
    row2.ours = _median(first["ours"])
    if first.get("upstream"):
        row2.theirs = _median(first["upstream"])
    row2.note = "one-time cost of a process's first SDK call"
    return [row, row2]


def prepare_group(ctx: Context) -> list[Row]:
    n = ctx.sizes["prepare"]
    src, listing = image_tree(ctx, n)

    # hard links need the work dirs on the file system of the image tree
    root = tempfile.mkdtemp(prefix="work-", dir=str(ctx.cache))
    ctx.cleanup.append(root)

    def once(side: str) -> dict:
        if side == "ours":
            return run_worker(ctx, "ours", "prepare", n, root=root, listing=listing)
        d = tempfile.mkdtemp(prefix="cp-", dir=root)
        wall, code = spawn(["cp", "-al", src, f"{d}/images"], env=_base_env(), cwd=d, log=f"{d}/log.txt")
        if code != 0:
            raise BenchError(f"cp -al failed: {Path(d, 'log.txt').read_text()[-2000:]}")
        return {"seconds": wall}

    runs = alternate(ctx, ["ours", "cp"], once)
    d = tempfile.mkdtemp(prefix="cp-rss-", dir=root)
    runs["cp"][0]["rss_peak_kib"] = peak_rss(["cp", "-al", src, f"{d}/images"], env=_base_env(), cwd=d)
    row = _ratio_row(f"prepare, {n:,} images (ark, hard links)", runs, "cp", 3.0, label="cp -al")
    row.note = f"{n / row.ours:,.0f} images/s (ours), {n / row.theirs:,.0f} files/s (cp -al)"
    return [row]


YOLO_TEMPLATE = REPO / "templates" / "det-yolo-tmi"
#: a CPU torchvision NMS for machines whose torchvision build does not match torch (see
#: tests/yolo_env/README.md); on PYTHONPATH for both sides, a no-op where torchvision loads
YOLO_ENV = REPO / "tests" / "yolo_env"
YOLO_PLAIN = BENCH / "yolo_plain.py"
#: what both sides train with (the det-yolo-tmi template's defaults but for epochs / size);
#: ``theirs`` gets the same values under Ultralytics' names
YOLO_TRAIN = {"full": {"epochs": 10, "img_size": 320}, "smoke": {"epochs": 1, "img_size": 96}}
YOLO_TRAIN_COMMON = {
    "model": "yolov8n.yaml",
    "batch_size": 8,
    "learning_rate": 0.002,
    "optimizer": "AdamW",
    "patience": 100,
    "workers": 2,
    "close_mosaic": 10,
    "cache": False,
    "plots": False,
    "seed": 0,
}
YOLO_PREDICT = {
    "batch_size": 16,
    "mining_conf_threshold": 0.05,
    "mining_nms_iou": 0.7,
    "mining_max_det": 300,
    "conf_threshold": 0.25,
    "nms_iou": 0.7,
    "max_det": 300,
}
#: per task: the template keys of its thresholds, in the order of Ultralytics' conf, iou, max_det
YOLO_THRESHOLD_KEYS = {
    "mining": ("mining_conf_threshold", "mining_nms_iou", "mining_max_det"),
    "infer": ("conf_threshold", "nms_iou", "max_det"),
}


def yolo_candidates(ctx: Context, n: int) -> tuple[str, str]:
    """``n`` distinct candidate images: the trees sample's 59 tiles (320 x 320) in their 8
    flips / rotations, re-encoded (JPEG q90), under ``cache/data/yolo-candidates-n``. Returns
    (an Ultralytics data.yaml whose ``test`` split is the candidates, a list file of the paths)."""
    root = ctx.cache / "data" / f"yolo-candidates-{n}"
    data_yaml, listing = root / "data.yaml", root / "candidates.txt"
    if not listing.exists():
        from PIL import Image

        ctx.log(f"bench: writing {n} candidate images under {root} (once) ...")
        shutil.rmtree(root, ignore_errors=True)
        (root / "images").mkdir(parents=True)
        tiles = sorted((REPO / "ymir_exc" / "samples" / "trees" / "images").glob("*.jpg"))
        ops = [
            None,
            Image.Transpose.FLIP_LEFT_RIGHT,
            Image.Transpose.FLIP_TOP_BOTTOM,
            Image.Transpose.ROTATE_90,
            Image.Transpose.ROTATE_180,
            Image.Transpose.ROTATE_270,
            Image.Transpose.TRANSPOSE,
            Image.Transpose.TRANSVERSE,
        ]
        paths = []
        for i in range(n):
            tile, op = tiles[i % len(tiles)], ops[(i // len(tiles)) % len(ops)]
            with Image.open(tile) as im:
                im = im.convert("RGB") if op is None else im.convert("RGB").transpose(op)
                p = root / "images" / f"{tile.stem}_t{(i // len(tiles))}.jpg"
                im.save(p, quality=90)
            paths.append(str(p))
        data_yaml.write_text(
            f"path: {root}\ntrain: images\nval: images\ntest: images\nnames: {{0: tree}}\n", encoding="utf-8"
        )
        listing.write_text("".join(f"{p}\n" for p in sorted(paths)), encoding="utf-8")
    return str(data_yaml), str(listing)


def _timed(ctx: Context, argv: list[str], env: dict[str, str], d: str, what: str) -> dict:
    """Run ``argv`` in ``d`` (output to d/log.txt): wall seconds and peak RSS (KiB) of its largest
    process (``/usr/bin/time -f %M`` when present: the executor's RSS for ours, not the harness's)."""
    rss_file = os.path.join(d, ".peak-rss")
    wrapped = (["/usr/bin/time", "-f", "%M", "-o", rss_file] if os.access("/usr/bin/time", os.X_OK) else []) + argv
    wall, code = spawn(wrapped, env=env, cwd=d, log=f"{d}/log.txt")
    if code != 0:
        raise BenchError(
            f"{what} failed (exit {code}); see {d}/log.txt:\n"
            f"{Path(d, 'log.txt').read_text(encoding='utf-8', errors='replace')[-3000:]}"
        )
    res: dict = {"seconds": wall, "dir": d}
    try:
        res["rss_peak_kib"] = int(Path(rss_file).read_text(encoding="ascii").split()[-1])
    except (OSError, ValueError, IndexError):
        pass
    if ctx.verbose:
        ctx.log(f"  {what:28s} {wall:7.2f} s  peak {res.get('rss_peak_kib', 0) / 1024:.0f} MiB")
    return res


def yolo_group(ctx: Context) -> list[Row]:
    """det-yolo-tmi through ``ymir-exc run`` (local runtime: harness prepare + executor process +
    collect, the whole command timed) vs the same Ultralytics work written directly
    (``bench/yolo_plain.py``: ``YOLO(...).train`` / ``.predict``), same data and arguments, fresh
    processes, alternating. Training on the bundled trees sample; mining (entropy) and inference
    with the weights of the first training, over ``yolo_candidates`` images."""
    names = [
        ("YOLO training vs YOLO(...).train", 1.10),
        ("YOLO mining (entropy) vs predict", 1.25),
        ("YOLO inference vs predict", 1.15),
    ]
    # one untimed import: tells whether the rows can run, and puts torch's and Ultralytics' files
    # in the page cache for both sides (else the first timed run, always ours, pays for the disk)
    probe = subprocess.run(
        [ctx.ours_python, "-c", "import ultralytics, ultralytics.engine.trainer, torch"],
        capture_output=True,
        env=dict(_base_env(), PYTHONPATH=str(YOLO_ENV)),
    )
    if probe.returncode != 0:
        reason = "ultralytics / torch not importable by this python (bash .ci/yolo-setup.sh installs them)"
        return [Row(name, target=t, target_text=f"<= {t:g}", skipped=reason) for name, t in names]

    size = "smoke" if ctx.smoke else "full"
    train_cfg = dict(YOLO_TRAIN_COMMON, **YOLO_TRAIN[size])
    img = train_cfg["img_size"]
    n_cand = ctx.sizes["yolo_candidates"]
    repeat = min(ctx.repeat, 3)
    root = tempfile.mkdtemp(prefix="yolo-", dir=ctx.tmp_root)
    store = os.path.join(root, "models")
    env_ours = dict(_base_env(), PYTHONPATH=f"{REPO}{os.pathsep}{YOLO_ENV}")
    env_plain = dict(_base_env(), PYTHONPATH=str(YOLO_ENV))
    first: dict[str, str] = {}

    def ours(task: list[str], config: dict[str, Any], extra: list[str], what: str, models: str = store) -> dict:
        d = tempfile.mkdtemp(prefix="ours-", dir=root)
        return _timed(ctx, _ours_argv(ctx, d, task, config, models, extra), env_ours, d, what)

    def plain(spec: dict[str, Any], what: str) -> dict:
        d = tempfile.mkdtemp(prefix="plain-", dir=root)
        spec = dict(spec, config_dir=os.path.join(d, "config"))
        if spec["mode"] == "train":
            spec["args"] = dict(
                spec["args"],
                data=_copy_yolo_dataset(first["dataset"], os.path.join(d, "dataset")),
                project=os.path.join(d, "runs"),
            )
        Path(d, "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        return _timed(ctx, [ctx.ours_python, str(YOLO_PLAIN), os.path.join(d, "spec.json")], env_plain, d, what)

    # ---- training: the first run is ours (its YOLO dataset and weights serve the later runs)
    train_args = {
        "epochs": train_cfg["epochs"],
        "batch": train_cfg["batch_size"],
        "imgsz": img,
        "lr0": train_cfg["learning_rate"],
        "optimizer": train_cfg["optimizer"],
        "patience": train_cfg["patience"],
        "workers": train_cfg["workers"],
        "close_mosaic": train_cfg["close_mosaic"],
        "device": ctx.device,
        "cache": False,
        "plots": False,
        "seed": train_cfg["seed"],
        "verbose": True,
        "exist_ok": True,
        "val": True,
        "name": "train",
    }

    def train_once(side: str) -> dict:
        if side == "ours":
            r = ours(["training"], train_cfg, [], "training / ours")
            if not first:
                out = os.path.join(r["dir"], "w", "out")
                first["dataset"] = os.path.join(out, "yolo_dataset")
                first["weights"] = os.path.join(out, "models", "best.pt")
                first["model"] = _model_hash(Path(r["dir"], "log.txt").read_text(encoding="utf-8"))
            return r
        return plain({"mode": "train", "model": train_cfg["model"], "args": train_args}, "training / ultralytics")

    train_runs = alternate(ctx, ["ours", "ultralytics"], train_once, repeat)
    rows = [_ratio_row(names[0][0], train_runs, "ultralytics", names[0][1], label="YOLO().train")]
    rows[0].note = (
        f"trees sample (43 train / 11 val), yolov8n from scratch, {train_cfg['epochs']} epoch(s) at "
        f"{img} px, batch {train_cfg['batch_size']}; {repeat} runs per side"
    )

    # ---- mining (entropy) and inference over the candidates: a model trained long enough to find
    # trees (full: trained once, kept in the cache; smoke: the first training's weights)
    if not ctx.smoke:
        first.update(yolo_model(ctx, YOLO_MODEL_EPOCHS, dict(train_cfg, epochs=YOLO_MODEL_EPOCHS), env_ours))
    data_yaml, listing = yolo_candidates(ctx, n_cand)
    common = {"img_size": img, "batch_size": YOLO_PREDICT["batch_size"], "workers": 2}
    for (name, target), task in zip(names[1:], ("mining", "infer"), strict=True):
        keys = YOLO_THRESHOLD_KEYS[task]
        cfg = dict(common, **{k: YOLO_PREDICT[k] for k in keys})
        if task == "mining":
            cfg["mining_algorithm"] = "entropy"
        pargs = dict(
            zip(("conf", "iou", "max_det"), (cfg[k] for k in keys), strict=True),
            imgsz=img,
            batch=common["batch_size"],
            device=ctx.device,
        )

        def once(side: str, task=task, cfg=cfg, pargs=pargs) -> dict:
            if side == "ours":
                return ours(
                    [task],
                    cfg,
                    ["--dataset", data_yaml, "--model", first["model"]],
                    f"{task} / ours",
                    models=first.get("store", store),
                )
            return plain(
                {"mode": "predict", "model": first["weights"], "source": listing, "args": pargs},
                f"{task} / ultralytics",
            )

        runs = alternate(ctx, ["ours", "ultralytics"], once, repeat)
        row = _ratio_row(name, runs, "ultralytics", target, label="predict")
        boxes = _plain_boxes(runs["ultralytics"][-1]["dir"])
        row.note = (
            f"{n_cand} candidates, {img} px, batch {common['batch_size']}, conf {pargs['conf']}; "
            f"{boxes} boxes (plain); model: {first.get('about', 'the first training')}"
            + ("; ours adds entropy scores, result.tsv" if task == "mining" else "; ours adds infer-result.json")
        )
        rows.append(row)
    return rows


#: epochs of the model the full run's mining / inference rows use (trained once, then cached):
#: enough for boxes at the templates' thresholds (a 10-epoch model finds nothing above 0.01)
YOLO_MODEL_EPOCHS = 60


def yolo_model(ctx: Context, epochs: int, train_cfg: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """A det-yolo-tmi model trained ``epochs`` epochs on the trees sample through ``ymir-exc run``,
    once, under ``cache/data/yolo-model-<epochs>`` (about 4 minutes here); later runs reuse it.
    Returns {"model": package hash, "store": its model store, "weights": the best stage's .pt,
    "about": a short description}."""
    root = ctx.cache / "data" / f"yolo-model-{epochs}"
    done = root / "model.json"
    if not done.exists():
        ctx.log(f"bench: training the mining / inference model once ({epochs} epochs, a few minutes) ...")
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        argv = _ours_argv(ctx, str(root), ["training"], train_cfg, str(root / "models"), [])
        _timed(ctx, argv, env, str(root), f"model ({epochs} epochs)")
        log = Path(root, "log.txt").read_text(encoding="utf-8")
        m = re.search(r"mAP: ([0-9.]+)", log)
        info = {
            "model": _model_hash(log),
            "store": str(root / "models"),
            "weights": str(root / "w" / "out" / "models" / "best.pt"),
            "about": f"yolov8n, {epochs} epochs on trees, mAP50 {float(m.group(1)):.3f}" if m else f"{epochs} epochs",
        }
        done.write_text(json.dumps(info), encoding="utf-8")
    return json.loads(done.read_text(encoding="utf-8"))


def _ours_argv(
    ctx: Context, d: str, tasks: list[str], config: dict[str, Any], models: str, extra: list[str]
) -> list[str]:
    """``ymir-exc run`` of det-yolo-tmi (local runtime) with ``config`` written to ``d/config.yaml``
    and the work dir ``d/w``."""
    cfg = os.path.join(d, "config.yaml")
    Path(cfg).write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return [
        ctx.ours_python,
        "-m",
        "ymir_exc.cli",
        "run",
        str(YOLO_TEMPLATE),
        "--runtime",
        "local",
        *[a for t in tasks for a in ("--task", t)],
        "--config",
        cfg,
        "--work-dir",
        os.path.join(d, "w"),
        "--model-location",
        models,
        "--quiet",
        *extra,
        *(["--gpu-id", ctx.device] if ctx.device != "cpu" else []),
    ]


def _copy_yolo_dataset(src: str, dst: str) -> str:
    """A copy of an Ultralytics dataset folder (image links kept as links, Ultralytics' label
    ``.cache`` files left out so that each run scans its labels), paths rewritten; its data.yaml."""
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("*.cache"))
    for name in ("data.yaml", "train.txt", "val.txt"):
        p = Path(dst, name)
        if p.exists():
            p.write_text(p.read_text(encoding="utf-8").replace(src, dst), encoding="utf-8")
    return str(Path(dst, "data.yaml"))


def _model_hash(log: str) -> str:
    m = re.search(r"model hash: ([0-9a-f]{40})", log)
    if not m:
        raise BenchError(f"no 'model hash' in the training output:\n{log[-2000:]}")
    return m.group(1)


def _plain_boxes(d: str) -> str:
    try:
        last = Path(d, "log.txt").read_text(encoding="utf-8").strip().splitlines()[-1]
        return f"{json.loads(last)['boxes']:,}"
    except (OSError, ValueError, KeyError, IndexError):
        return "?"


# ------------------------------------------------------------------ scale (opt-in: --only scale)

SCALE_WORKER = BENCH / "scale_worker.py"
#: candidates per size of the scale group (smoke: tiny)
SCALE_SIZES = {"full": [10_000, 100_000, 1_000_000], "smoke": [200, 2_000]}
#: prepare sizes (tiny JPEGs, generated once under the cache); with --scale-prepare-1m also the
#: streamed prepare rows (read from a folder, on disk) at 1,000,000 images (about 4 GB of disk)
SCALE_PREPARE = {"full": [10_000, 100_000], "smoke": [60]}
#: the memory bound of the writers and collect: 200 MB plus 40 bytes per item
SCALE_RSS_BASE, SCALE_RSS_PER_ITEM = 200 * 10**6, 40


def _scale_dir(ctx: Context, n: int) -> str:
    """A work dir with in/env.yaml (host paths), config.yaml and an n-line candidate index."""
    d = tempfile.mkdtemp(prefix=f"scale-{n}-", dir=ctx.tmp_root)
    in_dir, out_dir = f"{d}/in", f"{d}/out"
    os.makedirs(in_dir)
    os.makedirs(out_dir)
    sys.path.insert(0, str(BENCH))
    try:
        from scale_worker import asset
    finally:
        sys.path.remove(str(BENCH))
    with open(f"{in_dir}/candidate-index.tsv", "w", encoding="utf-8") as f:
        for start in range(0, n, 100_000):
            f.write("".join(asset(i) + "\n" for i in range(start, min(n, start + 100_000))))
    Path(in_dir, "env.yaml").write_text(
        "protocol_version: 1.1.0\ntask_id: t-bench\nrun_training: false\nrun_mining: true\nrun_infer: true\n"
        f"input:\n  root_dir: {in_dir}\n  assets_dir: {in_dir}/assets\n  annotations_dir: {in_dir}/annotations\n"
        f"  models_dir: {in_dir}/models\n  config_file: {in_dir}/config.yaml\n"
        f"  training_index_file: ''\n  val_index_file: ''\n  candidate_index_file: {in_dir}/candidate-index.tsv\n"
        f"output:\n  root_dir: {out_dir}\n  models_dir: {out_dir}/models\n  tensorboard_dir: {out_dir}/tensorboard\n"
        f"  training_result_file: {out_dir}/models/result.yaml\n  mining_result_file: {out_dir}/result.tsv\n"
        f"  infer_result_file: {out_dir}/infer-result.json\n  monitor_file: {out_dir}/monitor.txt\n"
        f"  executor_log_file: {out_dir}/ymir-executor-out.log\n",
        encoding="utf-8",
    )
    Path(in_dir, "config.yaml").write_text("class_names: [tree]\n", encoding="utf-8")
    return d


def _scale_run(ctx: Context, workload: str, n: int, d: str, images: str = "") -> dict:
    env = dict(
        ctx.side_env("ours"),
        DEFAULT_ENV_FILE_PATH=f"{d}/in/env.yaml",
        DEFAULT_CONFIG_FILE_PATH=f"{d}/in/config.yaml",
        SCALE_IN_DIR=f"{d}/in",
        SCALE_IMAGES=images,
    )
    log = f"{d}/{workload}.log"
    wall, code = spawn([ctx.ours_python, str(SCALE_WORKER), workload, str(n), d], env=env, cwd=d, log=log)
    text = Path(log).read_text(encoding="utf-8", errors="replace")
    if code != 0:
        raise BenchError(f"scale {workload} n={n} failed (exit {code}):\n{text[-3000:]}")
    res = json.loads(text.strip().splitlines()[-1])
    if ctx.verbose:
        ctx.log(f"  {workload:15s} {n:>9,}  {res['seconds']:8.2f} s  peak {res['rss_peak_kib'] / 1024:.0f} MiB")
    return res


def _scale_prepare_streamed(ctx: Context, n: int, images: str) -> list[Row]:
    """prepare's streamed paths over the n cached JPEGs, read included: ``--source`` folder ->
    mining in/, and a YOLO data.yaml (train / val .txt lists, no labels) -> training in/."""
    rows = []
    for workload, title in (
        ("prepare_source", "--source folder read + prepare (mining), {n:,} tiny JPEGs"),
        ("prepare_yolo", "YOLO data.yaml read + prepare (training), {n:,} tiny JPEGs"),
    ):
        d = tempfile.mkdtemp(prefix=f"{workload}-", dir=str(ctx.cache))
        ctx.cleanup.append(d)
        res = _scale_run(ctx, workload, n, d, images=images)
        row = Row(title.format(n=n), ours=res["seconds"], rss_ours=res["rss_peak_kib"], target_text="(info)")
        row.note = (
            f"{n / res['seconds']:,.0f} images/s; reading {res['read_seconds']:.1f} s; "
            f"interpreter + imports {res['rss_base_kib'] / 1024:.0f} MiB"
        )
        rows.append(row)
        shutil.rmtree(d, ignore_errors=True)
    return rows


def scale_group(ctx: Context) -> list[Row]:
    """Peak RSS and time at 10k / 100k / 1M candidates: the streaming infer writer (2 boxes per
    image), the mining k-way merge of 2 ranks' parts and the MiningResultWriter (pairs one by
    one, spilled runs), collect's checks of those files; prepare of 10k / 100k tiny JPEGs; and
    det-yolo-tmi mining of ``yolo_candidates`` images with 1 vs 2 CPU ranks. One run per size
    (medians of several would take hours at 1M); the memory bound is the target."""
    size = "smoke" if ctx.smoke else "full"
    rows: list[Row] = []
    for n in SCALE_SIZES[size]:
        d = _scale_dir(ctx, n)
        bound_kib = (SCALE_RSS_BASE + SCALE_RSS_PER_ITEM * n) // 1024
        for workload, title in (
            ("infer_stream", "InferResultWriter, {n:,} images x 2 boxes"),
            ("mining_merge", "merge_mining_parts, 2 parts, {n:,} rows"),
            ("mining_writer", "MiningResultWriter, {n:,} pairs"),
            ("collect_infer", "collect.check_infer, {n:,} images"),
            ("collect_mining", "collect.check_mining, {n:,} lines"),
        ):
            res = _scale_run(ctx, workload, n, d)
            row = Row(
                title.format(n=n),
                ours=res["seconds"],
                rss_ours=res["rss_peak_kib"],
                target_text=f"RSS <= {bound_kib / 1024:.0f} MiB",
            )
            row.ok = res["rss_peak_kib"] <= bound_kib
            rate, base_mib = n / max(res["seconds"], 1e-9), res["rss_base_kib"] / 1024
            row.note = f"{rate:,.0f} items/s; interpreter + imports {base_mib:.0f} MiB"
            rows.append(row)
        shutil.rmtree(d, ignore_errors=True)
    for n in SCALE_PREPARE[size]:
        src, listing = image_tree(ctx, n)
        root = tempfile.mkdtemp(prefix="work-", dir=str(ctx.cache))
        ctx.cleanup.append(root)
        res = run_worker(ctx, "ours", "prepare", n, root=root, listing=listing)
        row = Row(
            f"prepare, {n:,} tiny JPEGs (ark, hard links)",
            ours=res["seconds"],
            rss_ours=res["rss_peak_kib"],
            target_text="(info)",
        )
        row.note = (
            f"{n / res['seconds']:,.0f} images/s; RSS with the {n:,}-item listing loaded: "
            f"{res['rss_inputs_kib'] / 1024:.0f} MiB"
        )
        rows.append(row)
        shutil.rmtree(root, ignore_errors=True)
        rows.extend(_scale_prepare_streamed(ctx, n, src))
    if ctx.prepare_1m and not ctx.smoke:  # the in-memory listing row would need ~1 GB: streamed rows only
        src, _ = image_tree(ctx, 1_000_000)
        rows.extend(_scale_prepare_streamed(ctx, 1_000_000, src))
    try:
        rows.extend(_yolo_ranks_rows(ctx))
    except BenchError as e:  # the rows above stay measured
        print(f"bench: scale: YOLO ranks: {e}", file=sys.stderr)
        rows.append(
            Row(
                f"YOLO mining, {ctx.sizes['yolo_candidates']} candidates, 2 CPU ranks vs 1",
                target_text="(info)",
                ok=False,
                skipped=str(e).splitlines()[0],
            )
        )
    return rows


def _yolo_ranks_rows(ctx: Context) -> list[Row]:
    """det-yolo-tmi mining (entropy) of ``yolo_candidates`` images, num_workers 1 vs 2 (gloo)."""
    name = f"YOLO mining, {ctx.sizes['yolo_candidates']} candidates, 2 CPU ranks vs 1"
    probe = subprocess.run(
        [ctx.ours_python, "-c", "import ultralytics, torch"],
        capture_output=True,
        env=dict(_base_env(), PYTHONPATH=str(YOLO_ENV)),
    )
    if probe.returncode != 0:
        return [Row(name, target_text="(info)", skipped="ultralytics / torch not importable")]
    size = "smoke" if ctx.smoke else "full"
    env = dict(_base_env(), PYTHONPATH=f"{REPO}{os.pathsep}{YOLO_ENV}")
    train_cfg = dict(YOLO_TRAIN_COMMON, **YOLO_TRAIN[size])
    model = yolo_model(ctx, train_cfg["epochs"], train_cfg, env)
    data_yaml, _ = yolo_candidates(ctx, ctx.sizes["yolo_candidates"])
    root = tempfile.mkdtemp(prefix="yolo-ranks-", dir=ctx.tmp_root)
    out: dict[int, dict] = {}
    for workers in (1, 2):
        d = tempfile.mkdtemp(prefix=f"ranks{workers}-", dir=root)
        cfg = dict(YOLO_PREDICT, img_size=train_cfg["img_size"], mining_algorithm="entropy", num_workers=workers)
        argv = _ours_argv(ctx, d, ["mining"], cfg, model["store"], ["--dataset", data_yaml, "--model", model["model"]])
        out[workers] = _timed(ctx, argv, env, d, f"mining, {workers} rank(s)")
        lines = Path(d, "w", "out", "result.tsv").read_text(encoding="utf-8").splitlines()
        out[workers]["rows"] = [(os.path.basename(p), float(s)) for p, s in (line.split("\t") for line in lines)]
    one, two = dict(out[1]["rows"]), dict(out[2]["rows"])
    same = (
        sorted(one) == sorted(two)
        and max(abs(one[p] - two[p]) for p in one) <= 1e-6
        and all(
            a == b or abs(one[a] - one[b]) <= 1e-6
            for (a, _), (b, _) in zip(out[1]["rows"], out[2]["rows"], strict=True)
        )
    )
    row = Row(
        name,
        ours=out[2]["seconds"],
        theirs=out[1]["seconds"],
        theirs_label="1 rank",
        target_text="(info)",
        rss_ours=out[2].get("rss_peak_kib"),
        rss_theirs=out[1].get("rss_peak_kib"),
    )
    row.note = (
        "same scores (within 1e-6) and ranking" if same else "OUTPUT DIFFERS"
    ) + f"; whole ymir-exc run (prepare + executor + collect); {model['about']}"
    row.ok = None if same else False
    return [row]


GROUPS: list[tuple[str, Callable[[Context], list[Row]]]] = [
    *[(k, sdk_group(k, title, t, f)) for k, title, t, f in SDK_WORKLOADS],
    ("import", import_group),
    ("prepare", prepare_group),
    ("yolo", yolo_group),
    ("scale", scale_group),
]


# ------------------------------------------------------------------ output
#: groups that run only when named with --only (hours of CPU, gigabytes of disk; not in CI)
OPT_IN_GROUPS = ("scale",)


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1:
        return f"{s * 1000:.1f} ms"
    return f"{s:.2f} s"


def _fmt_mib(k: int | None) -> str:
    return "-" if k is None else f"{k / 1024:.0f} MiB"


def table(rows: list[Row], smoke: bool, markdown: bool) -> str:
    head = ["workload", "ours", "theirs", "ratio", "target", "result", "peak RSS ours", "peak RSS theirs", "note"]
    body = []
    for r in rows:
        if r.skipped and r.ours is None:
            body.append([r.name, "-", "-", "-", r.target_text, "SKIP", "-", "-", f"skipped: {r.skipped}"])
            continue
        theirs = "-" if r.theirs is None else f"{_fmt_s(r.theirs)} ({r.theirs_label})"
        if r.ok is None:
            verdict = "info" if r.target is None and not r.skipped else "SKIP"
        else:
            verdict = ("pass" if r.ok else "fail") + " (smoke)" if smoke else ("PASS" if r.ok else "FAIL")
        note = "; ".join(x for x in (r.note, f"skipped: {r.skipped}" if r.skipped else "") if x)
        body.append(
            [
                r.name,
                _fmt_s(r.ours),
                theirs,
                "-" if r.ratio is None else f"{r.ratio:.3f}",
                r.target_text,
                verdict,
                _fmt_mib(r.rss_ours),
                _fmt_mib(r.rss_theirs),
                note,
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in b) + " |" for b in body]
        return "\n".join(lines)
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def fs_type(path: str) -> str:
    """File system type of ``path`` (from /proc/mounts), e.g. ``ext4`` or ``tmpfs``."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if (
                    len(parts) > 2
                    and os.path.realpath(path).startswith(parts[1].rstrip("/") + "/")
                    and len(parts[1]) > len(best)
                ):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{datetime.date.today().isoformat()}, {platform.system()} {platform.release()}, nproc {os.cpu_count()}, "
        f"{cpu}, {mem} RAM, Python {platform.python_version()}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat, targets not enforced (CI)")
    ap.add_argument("--repeat", type=int, default=None, help="runs per side (default 5; smoke 1)")
    ap.add_argument(
        "--only",
        action="append",
        default=None,
        help=f"run only these groups ({', '.join(k for k, _ in GROUPS)}); repeatable",
    )
    ap.add_argument("--cache", default=str(BENCH / ".cache"), help="upstream venv + generated inputs")
    ap.add_argument("--tmp", default=None, help="where each run's work dir goes (default: the system tmp)")
    ap.add_argument(
        "--scale-prepare-1m",
        action="store_true",
        help="scale group: also prepare 1,000,000 tiny JPEGs read from a folder (~4 GB disk, ~30 min)",
    )
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown (for the README)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run")
    ap.add_argument(
        "--device",
        default="cpu",
        help="YOLO rows: cpu (default) or one GPU index, e.g. 0 (ours: ymir-exc run --gpu-id 0)",
    )
    args = ap.parse_args(argv)
    if args.device != "cpu" and not args.device.isdigit():
        ap.error(f"--device: cpu or one GPU index (0, 1, ...), got {args.device!r}")

    repeat = args.repeat or (1 if args.smoke else 5)
    if not args.smoke and repeat < 5:
        print(f"bench: note: --repeat {repeat} < 5; the targets call for medians of at least 5", file=sys.stderr)
    cache = Path(args.cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    known = {k for k, _ in GROUPS}
    for k in args.only or []:
        if k not in known:
            ap.error(f"unknown group {k!r}; one of {', '.join(sorted(known))}")
    t0 = time.time()
    try:
        up_python, up_note = ensure_upstream(cache, offline_ok=args.smoke)
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    tmp_root = tempfile.mkdtemp(prefix="ymir-bench-", dir=args.tmp)
    ctx = Context(
        smoke=args.smoke,
        repeat=repeat,
        sizes=dict(SMOKE_SIZES if args.smoke else FULL_SIZES),
        cache=cache,
        tmp_root=tmp_root,
        ours_python=sys.executable,
        upstream_python=up_python,
        upstream_note=up_note,
        only=args.only,
        prepare_1m=args.scale_prepare_1m,
        verbose=args.verbose,
        device=args.device,
        cleanup=[tmp_root],
    )
    try:
        return _run(ctx, args, up_note, repeat, t0)
    finally:
        for d in ctx.cleanup:
            shutil.rmtree(d, ignore_errors=True)


def _run(ctx: Context, args: argparse.Namespace, up_note: str, repeat: int, t0: float) -> int:
    print(f"bench: {machine()}", file=sys.stderr)
    print(f"bench: {up_note}; {repeat} run(s) per side, alternating, medians", file=sys.stderr, flush=True)
    rows: list[Row] = []
    failed = []
    for key, group in GROUPS:
        if args.only and key not in args.only or not args.only and key in OPT_IN_GROUPS:
            continue
        ctx.log(f"bench: {key} ...")
        os.sync()  # the previous group's writes go to disk now, not during this group's timings
        try:
            rows.extend(group(ctx))
        except BenchError as e:
            failed.append(key)
            print(f"bench: {key}: {e}", file=sys.stderr)
    print(
        f"\n{'SMOKE (tiny sizes, 1 run, targets not enforced)' if args.smoke else 'ymir_exc benchmarks'}: {machine()}"
    )
    print(f"{up_note}; {repeat} run(s) per side, alternating; times are medians; theirs = upstream unless named")
    print(
        f"work dirs: {os.path.dirname(ctx.tmp_root)} ({fs_type(ctx.tmp_root)}); prepare: under {ctx.cache} "
        f"({fs_type(str(ctx.cache))})\n"
    )
    print(table(rows, args.smoke, args.markdown))
    print(f"\n({time.time() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "machine": machine(),
                    "smoke": args.smoke,
                    "repeat": repeat,
                    "upstream": up_note,
                    "rows": [{**r.__dict__, "ratio": r.ratio} for r in rows],
                },
                f,
                indent=1,
            )
    if failed:
        print(f"bench: FAILED to measure: {', '.join(failed)}", file=sys.stderr)
        return 2
    missed = [r.name.strip() for r in rows if r.ok is False]
    if missed and not args.smoke:
        print(f"bench: target missed: {'; '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
