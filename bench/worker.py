"""One measured run, in a fresh interpreter: ``python bench/worker.py SPEC.json``.

Run by ``bench/run`` (bench.py), never imported. The same file runs under three "sides":

- ``ours``: this checkout's ``ymir_exc`` (the runner puts the repo first on PYTHONPATH);
- ``upstream``: PyPI ``ymir-exc==1.1.0.523``, from its own venv (it also imports as ``ymir_exc``);
- ``plain``: no SDK in the timed region: plain Python computing and writing the same bytes as
  ``ours`` with ``open`` / ``write`` (the floor each of our writers is held to).

Inputs are built before the clock starts, with each side's own classes. The result (seconds of
the timed region, peak RSS before and after, what was written) goes to ``SPEC["result"]`` as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import sys
import time


def _rss_kib() -> int:
    """Peak RSS of this process so far, KiB: VmHWM of its own address space. (getrusage's
    ru_maxrss would also count the parent's peak: posix_spawn / vfork shares it until exec.)"""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


_RSS_AT_START = [0]


def _start() -> float:
    """Start the clock, noting the peak RSS so far (interpreter + inputs)."""
    _RSS_AT_START[0] = _rss_kib()
    return time.perf_counter()


def _digest(path: str) -> dict:
    h = hashlib.sha1()
    size = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            size += len(b)
            h.update(b)
    return {"sha1": h.hexdigest(), "bytes": size}


def _sdk(side: str, env_file: str, config_file: str, numpy: bool = False):
    """Import the side's SDK, point it at this run's env.yaml / config.yaml, and pay its one-time
    costs before the clock starts: the modules a workload uses, one env.yaml read (ours builds
    its pydantic validators on first use, upstream at import; ``import`` rows measure imports)."""
    from ymir_exc import dataset_reader, env, monitor, result_writer, settings  # noqa: F401

    # ours reads the environment variables at import; upstream 1.1.0.523 hard-codes /in/env.yaml
    # (and has no config path setting: it reads env.yaml's input.config_file)
    settings.DEFAULT_ENV_FILE_PATH = env_file
    if hasattr(settings, "DEFAULT_CONFIG_FILE_PATH"):
        settings.DEFAULT_CONFIG_FILE_PATH = config_file
    env.get_current_env()
    if side == "ours":
        import ymir_exc.formats  # noqa: F401  (write_model_stage imports it on first call)
    if numpy:
        try:
            import numpy as _np  # noqa: F401  (our mining writer imports it; a mining executor has it loaded)
        except ImportError:  # the upstream venv: its SDK does not use numpy
            pass
    return settings


def _asset_path(i: int) -> str:
    h = hashlib.sha1(i.to_bytes(8, "little")).hexdigest()
    return f"/in/assets/{h[-2:]}/{h}.jpg"


# ---------------------------------------------------------------- workloads
# each returns (seconds, output path or None, extra dict)


def monitor(side: str, n: int, spec: dict):
    out = spec["out_dir"] + "/monitor.txt"
    percents = [i / n for i in range(n)]
    if side == "plain":
        task_id = spec["task_id"]

        def run():
            for p in percents:
                if p >= 0.995:
                    p = 0.99
                with open(out, "w") as f:
                    f.write(f"{task_id}\t{time.time():.6f}\t{p:.2f}\t2\t0\n")
    else:
        _sdk(side, spec["env_file"], spec["config_file"])
        from ymir_exc import monitor as m

        write = m.write_monitor_logger

        def run():
            for p in percents:
                write(p)

    t0 = _start()
    run()
    return time.perf_counter() - t0, out, {}


def monitor_lines(side: str, n: int, spec: dict):
    """n calls whose lines all differ (n <= 100 percents 0.00 .. 0.99): nothing to coalesce."""
    spec = dict(spec)
    out = spec["out_dir"] + "/monitor.txt"
    percents = [i / 100 for i in range(n)]
    _sdk(side, spec["env_file"], spec["config_file"])
    from ymir_exc import monitor as m

    write = m.write_monitor_logger
    t0 = _start()
    for p in percents:
        write(p)
    return time.perf_counter() - t0, out, {}


def mining(side: str, n: int, spec: dict):
    out = spec["out_dir"] + "/result.tsv"
    rnd = random.Random(1)
    pairs = [(_asset_path(i), rnd.random()) for i in range(n)]
    if side == "plain":

        def run():
            # ours: sorted by score descending, stable; scores as repr(float)
            ordered = sorted(pairs, key=lambda p: -p[1])
            with open(out, "w", encoding="utf-8") as f:
                f.write("".join([f"{p}\t{s!r}\n" for p, s in ordered]))
    else:
        _sdk(side, spec["env_file"], spec["config_file"], numpy=True)
        from ymir_exc import result_writer as rw

        def run():
            rw.write_mining_result(pairs)

    t0 = _start()
    run()
    return time.perf_counter() - t0, out, {}


CLASS_NAMES = ["person", "cat", "dog", "tree", "car"]


def infer(side: str, n: int, spec: dict):
    out = spec["out_dir"] + "/infer-result.json"
    boxes_per_image = spec.get("boxes", 10)
    rnd = random.Random(2)
    if side == "upstream":
        _sdk(side, spec["env_file"], spec["config_file"])
    from ymir_exc import result_writer as rw  # plain: our classes are its input, built untimed

    data = {}
    for i in range(n):
        anns = []
        for _ in range(boxes_per_image):
            box = rw.Box(
                x=rnd.randrange(0, 600), y=rnd.randrange(0, 600), w=rnd.randrange(1, 200), h=rnd.randrange(1, 200)
            )
            anns.append(rw.Annotation(class_name=CLASS_NAMES[rnd.randrange(5)], score=round(rnd.random(), 6), box=box))
        data[_asset_path(i)] = anns
    if side == "plain":

        def run():
            result = {}
            for path, anns in data.items():
                result[os.path.basename(path)] = {
                    "boxes": [
                        {
                            "class_name": a.class_name,
                            "score": a.score,
                            "box": {"x": a.box.x, "y": a.box.y, "w": a.box.w, "h": a.box.h},
                        }
                        for a in anns
                    ]
                }
            with open(out, "w", encoding="utf-8") as f:
                f.write(json.dumps({"detection": result}, ensure_ascii=False, separators=(",", ":")))
    else:
        if side == "ours":
            _sdk(side, spec["env_file"], spec["config_file"])

        def run():
            rw.write_infer_result(data)

    t0 = _start()
    run()
    return time.perf_counter() - t0, out, {}


def item_paths(side: str, n: int, spec: dict):
    _sdk(side, spec["env_file"], spec["config_file"])
    from ymir_exc import dataset_reader as dr
    from ymir_exc import env

    t0 = _start()
    count = 0
    asset = annotation = None
    # the usual loop, unpacking included (what is timed); the last pair is returned below
    for asset, annotation in dr.item_paths(env.DatasetType.TRAINING):  # noqa: B007
        count += 1
    dt = time.perf_counter() - t0
    if count != n:
        raise SystemExit(f"item_paths yielded {count} items, expected {n}")
    return dt, None, {"items": count, "last": [asset, annotation]}


def model_stage(side: str, n: int, spec: dict):
    out_models = spec["out_dir"] + "/models"
    os.makedirs(out_models, exist_ok=True)
    with open(out_models + "/w.pt", "wb") as f:
        f.write(b"weights")
    out = out_models + "/result.yaml"
    rnd = random.Random(3)
    calls = [(f"epoch_{i}", round(rnd.random(), 4), 1_700_000_000 + i) for i in range(n)]
    if side == "plain":
        import yaml

        def run():
            stages = {}
            result = {}
            for name, m, ts in calls:
                stages.pop(name, None)
                stages[name] = {"stage_name": name, "files": ["w.pt"], "timestamp": ts, "mAP": m}
                best = max(stages.values(), key=lambda s: (s["mAP"], s["timestamp"]))["stage_name"]
                while len(stages) > 11:
                    oldest = min((s for s in stages.values() if s["stage_name"] != best), key=lambda s: s["timestamp"])
                    del stages[oldest["stage_name"]]
                result.pop("mAP", None)
                result["best_stage_name"] = best
                result["mAP"] = stages[best]["mAP"]
                result["model_stages"] = dict(stages)
                with open(out, "w", encoding="utf-8") as f:
                    f.write(yaml.safe_dump(result, sort_keys=False, allow_unicode=True))
    elif side == "ours":
        _sdk(side, spec["env_file"], spec["config_file"])
        from ymir_exc import result_writer as rw

        def run():
            for name, m, ts in calls:
                rw.write_model_stage(name, ["w.pt"], mAP=m, timestamp=ts)
    else:
        # upstream 1.1.0.523 has no write_model_stage: its training writer rewrites result.yaml
        # with one entry per call (no stages, no eviction)
        _sdk(side, spec["env_file"], spec["config_file"])
        from ymir_exc import result_writer as rw

        def run():
            for _name, m, _ts in calls:
                rw.write_training_result(model_names=["w.pt"], mAP=m, classAPs={})

    t0 = _start()
    run()
    return time.perf_counter() - t0, out, {}


def prepare(side: str, n: int, spec: dict):
    """ours: ymir_exc.harness.workspace.prepare of the cached image tree (ark annotations)."""
    from ymir_exc.dataset_reader import BBox
    from ymir_exc.harness.datasets import Dataset, Item
    from ymir_exc.harness.workspace import prepare as ws_prepare

    with open(spec["listing"], encoding="utf-8") as f:
        listing = json.load(f)
    names = listing["class_names"]
    items = [Item(path, [BBox(c, names[c], x, y, w, h) for c, x, y, w, h in boxes]) for path, boxes in listing["items"]]
    n_val = len(items) // 5
    ds = Dataset("bench", names, items[n_val:], items[:n_val], [])
    t0 = _start()
    task = ws_prepare(
        spec["work_dir"],
        ds,
        ["training"],
        {"training": {"epochs": 1}},
        user_config={"export_format": "det-ark:raw"},
        task_id="t-bench",
    )
    dt = time.perf_counter() - t0
    return dt, None, {"assets": task.stats.assets if task.stats else None}


WORKLOADS = {
    "monitor": monitor,
    "monitor_lines": monitor_lines,
    "mining": mining,
    "infer": infer,
    "item_paths": item_paths,
    "model_stage": model_stage,
    "prepare": prepare,
}


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    import warnings

    warnings.simplefilter("ignore")  # upstream on pydantic 2: deprecation warnings, not errors
    seconds, out, extra = WORKLOADS[spec["workload"]](spec["side"], int(spec["n"]), spec)
    result = {"seconds": seconds, "rss_inputs_kib": _RSS_AT_START[0], "rss_peak_kib": _rss_kib(), **extra}
    if out and os.path.exists(out):
        result["output"] = _digest(out)
    with open(spec["result"], "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
