"""One measurement of bench's ``scale`` group, in its own process (peak RSS = this workload's).

Usage: python bench/scale_worker.py WORKLOAD N DIR; prints one JSON line
``{"seconds": ..., "rss_peak_kib": ..., ...}``. DIR holds in/env.yaml, in/config.yaml and
in/candidate-index.tsv (N lines), made by bench.py; outputs go to DIR/out. Inputs are generated
on the fly (no list of N items is ever built here), so the peak RSS is the code under test's.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

BOXES = 2  # boxes per image in the infer workloads


def asset(i: int) -> str:
    import hashlib

    h = hashlib.sha1(i.to_bytes(8, "little")).hexdigest()
    return f"/in/assets/{h[-2:]}/{h}.jpg"


def score(i: int) -> float:
    return ((i * 2654435761) % 1000003) / 1000003.0


def infer_stream(n: int, d: str) -> dict:
    from ymir_exc.streaming import InferResultWriter

    t0 = time.perf_counter()
    with InferResultWriter() as w:
        for i in range(n):
            w.add(
                asset(i),
                [
                    {"class_name": "tree", "score": score(i + k), "box": {"x": k, "y": 2, "w": 10, "h": 12}}
                    for k in range(BOXES)
                ],
            )
    return {"seconds": time.perf_counter() - t0, "bytes": os.path.getsize(f"{d}/out/infer-result.json")}


def mining_merge(n: int, d: str) -> dict:
    """Two ranks' sorted parts (written first, not timed), then the k-way merge (timed)."""
    from ymir_exc.streaming import merge_mining_parts, write_mining_part

    parts = [f"{d}/part-{r}.tsv" for r in range(2)]
    for r, part in enumerate(parts):
        write_mining_part(part, ((i, asset(i), score(i)) for i in range(r, n, 2)))
    t0 = time.perf_counter()
    merge_mining_parts(parts, expected=n)
    return {"seconds": time.perf_counter() - t0}


def mining_writer(n: int, d: str) -> dict:
    """MiningResultWriter: pairs one at a time, sorted runs spilled, merged."""
    from ymir_exc.streaming import MiningResultWriter

    t0 = time.perf_counter()
    with MiningResultWriter() as w:
        for i in range(n):
            w.add(asset(i), score(i))
    return {"seconds": time.perf_counter() - t0}


def _env():
    from pathlib import Path

    from ymir_exc.harness.collect import load_env

    return load_env(Path(os.environ["SCALE_IN_DIR"]))


def collect_infer(n: int, d: str) -> dict:
    from ymir_exc.harness import collect

    env = _env()
    t0 = time.perf_counter()
    rep = collect.check_infer(env, ["tree"])
    assert rep.problems == [] and rep.images == n, rep.problems[:3]
    return {"seconds": time.perf_counter() - t0}


def collect_mining(n: int, d: str) -> dict:
    from ymir_exc.harness import collect

    env = _env()
    t0 = time.perf_counter()
    rep = collect.check_mining(env)
    assert rep.problems == [], rep.problems[:3]
    return {"seconds": time.perf_counter() - t0}


def _prepare(d: str, ds, tasks: list[str], model: dict | None) -> float:
    from ymir_exc.harness import workspace

    t0 = time.perf_counter()
    templates = {t: {"export_format": "det-ark:raw"} for t in tasks}
    if hasattr(workspace, "PrepareOptions"):
        options = workspace.PrepareOptions(assets="link")
        workspace.prepare(f"{d}/work", ds, tasks, templates, options, model=model, task_id="t-bench")
    else:  # a checkout from before PrepareOptions (bench/README.md's "before" figures)
        workspace.prepare(f"{d}/work", ds, tasks, templates, assets="link", model=model, task_id="t-bench")
    return time.perf_counter() - t0


def prepare_source(n: int, d: str) -> dict:
    """``--source`` of n tiny JPEGs (SCALE_IMAGES) read and prepared for mining, all timed."""
    from ymir_exc.harness.sources import source_dataset

    t0 = time.perf_counter()
    ds = source_dataset(os.environ["SCALE_IMAGES"])
    read = time.perf_counter() - t0
    model = {"class_names": ["tree"], "files": []}
    return {"seconds": read + _prepare(d, ds, ["mining"], model), "read_seconds": read, "items": len(ds.candidate)}


def prepare_yolo(n: int, d: str) -> dict:
    """A YOLO data.yaml over n tiny JPEGs (train / val .txt lists: 4 of 5 / 1 of 5; no labels:
    background) read (duplicate check included) and prepared for training, all timed."""
    from ymir_exc.harness.datasets import load_dataset

    images = os.environ["SCALE_IMAGES"]
    with open(f"{d}/train.txt", "w") as tr, open(f"{d}/val.txt", "w") as va:
        for i in range(n):
            (va if i % 5 == 4 else tr).write(f"{images}/img_{i:06d}.jpg\n")
    with open(f"{d}/data.yaml", "w") as f:
        f.write(f"path: {os.path.dirname(images)}\ntrain: {d}/train.txt\nval: {d}/val.txt\nnames: [tree]\n")
    t0 = time.perf_counter()
    ds = load_dataset(f"{d}/data.yaml")
    read = time.perf_counter() - t0
    return {"seconds": read + _prepare(d, ds, ["training"], None), "read_seconds": read, "items": len(ds.train)}


WORKLOADS = {
    "prepare_source": prepare_source,
    "prepare_yolo": prepare_yolo,
    "infer_stream": infer_stream,
    "mining_merge": mining_merge,
    "mining_writer": mining_writer,
    "collect_infer": collect_infer,
    "collect_mining": collect_mining,
}


def main() -> None:
    workload, n, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    import ymir_exc.result_writer  # noqa: F401  (the SDK's import cost is part of the baseline)

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = WORKLOADS[workload](n, d)
    res["rss_peak_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res["rss_base_kib"] = base
    print(json.dumps(res))


if __name__ == "__main__":
    main()
