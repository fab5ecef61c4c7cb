"""``ymir-exc loop``: the data-centric iteration YMIR exists for, measured.

Split a dataset's labeled training images into a small initial set and a pool whose labels are
hidden. Each round: train (from scratch, or continuing from the previous round's model), evaluate
on the fixed val set (the executor's reported mAP of its best stage, i.e. mAP50 on val for the
bundled executors), mine the top-k of the pool with the executor's mining task, "label" them by
revealing their held-out ground truth, and merge them into the training set. ``--baseline
random`` runs the same rounds selecting k pool images at random (same seed, same initial set).

Every step goes through the same prepare / run / collect as ``ymir-exc run``; every round's model
is a stored model package. Outputs: a table, ``loop.json`` with every figure and a PNG plot of
mAP50 against the number of labeled images (matplotlib).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ymir_exc.harness.datasets import Dataset, Item
from ymir_exc.harness.executors import LocalExecutor
from ymir_exc.harness.models import ModelStore
from ymir_exc.harness.pipeline import TaskOutcome, run_task


@dataclass
class RoundResult:
    strategy: str
    round: int
    labeled: int
    mAP: float
    model_hash: str
    train_seconds: float
    mine_seconds: float = 0.0
    selected: List[str] = field(default_factory=list)


class LoopError(RuntimeError):
    """A step of the loop failed; the message says which round, strategy and step."""


def split_initial(ds: Dataset, initial: int, seed: int) -> tuple:
    """(initial labeled items, pool items): a seeded shuffle of the training images.

    Raises:
        ValueError: ``initial`` is not smaller than the number of training images.
    """
    if not 0 < initial < len(ds.train):
        raise ValueError(f"--initial must be between 1 and {len(ds.train) - 1} (the dataset has {len(ds.train)} "
                         f"training images), got {initial}")
    order = sorted(ds.train, key=lambda i: i.image_path)
    random.Random(seed).shuffle(order)
    return order[:initial], order[initial:]


def _require_ok(outcome: TaskOutcome, what: str) -> None:
    r = outcome.run
    if r is None or not r.ok:
        tail = r.log_tail(10) if r else ""
        raise LoopError(f"{what} failed (exit code {r.exit_code if r else '?'}; work dir {outcome.prepared.work_dir})"
                        f"\n{tail}")
    if outcome.problems:
        raise LoopError(f"{what}: outputs break the contract: " + "; ".join(outcome.problems[:3]))


def run_loop(executor: LocalExecutor, runtime: str, ds: Dataset, *, initial: int, rounds: int, topk: int,
             strategies: List[str], seed: int, out_dir: Path, store: ModelStore,
             user_config: Optional[Dict[str, Any]] = None, continue_training: bool = False,
             show: bool = False, log: Callable[[str], None] = print) -> List[RoundResult]:
    """Run the loop for every strategy (``random`` = harness-side random selection; anything else
    is the executor's ``mining_algorithm``). Returns one RoundResult per (strategy, round)."""
    init, pool0 = split_initial(ds, initial, seed)
    if rounds * topk > len(pool0):
        raise ValueError(f"{rounds} rounds x top-{topk} = {rounds * topk} images, but the pool holds {len(pool0)}")
    results: List[RoundResult] = []
    for strategy in strategies:
        labeled, pool = list(init), list(pool0)
        rng = random.Random(seed)
        prev_model: Optional[str] = None
        for r in range(rounds + 1):
            tag = f"{strategy} round {r}"
            base = out_dir / strategy / f"round_{r}"
            train_ds = Dataset(f"{ds.name}-{strategy}-r{r}", ds.class_names, labeled, ds.val, [])
            cfg = dict(user_config or {})
            trained = run_task(executor, runtime, ["training"], train_ds, work_dir=base / "train", store=store,
                               user_config=cfg, model_ref=prev_model if continue_training else None, show=show)
            _require_ok(trained, f"{tag}: training")
            assert trained.training is not None and trained.training.model_hash is not None and trained.run is not None
            res = RoundResult(strategy, r, len(labeled), trained.training.mAP, trained.training.model_hash,
                              round(trained.run.seconds, 2))
            prev_model = res.model_hash
            if r < rounds:
                if strategy == "random":
                    picked = rng.sample(range(len(pool)), topk)
                    chosen = [pool[i] for i in sorted(picked)]
                else:
                    mine_ds = Dataset(f"{ds.name}-pool", ds.class_names, [], [], [Item(i.image_path) for i in pool])
                    mcfg = dict(cfg, mining_algorithm=strategy)
                    mined = run_task(executor, runtime, ["mining"], mine_ds, work_dir=base / "mine", store=store,
                                     user_config=mcfg, model_ref=res.model_hash, show=show)
                    _require_ok(mined, f"{tag}: mining")
                    assert mined.mining is not None and mined.run is not None
                    res.mine_seconds = round(mined.run.seconds, 2)
                    sources = mined.prepared.stats.sources if mined.prepared.stats else {}
                    by_path: Dict[str, List[Item]] = {}
                    for it in pool:
                        by_path.setdefault(it.image_path, []).append(it)
                    chosen = []
                    for asset, _score in mined.mining.ranked:
                        src = sources.get(os.path.basename(asset))
                        while src in by_path and by_path[src] and len(chosen) < topk:
                            chosen.append(by_path[src].pop())
                        if len(chosen) >= topk:
                            break
                    if len(chosen) < topk:
                        raise LoopError(f"{tag}: mining ranked only {len(chosen)} pool images, need {topk}")
                ids = {id(i) for i in chosen}
                pool = [i for i in pool if id(i) not in ids]
                labeled = labeled + chosen  # "labeling": their held-out ground truth is revealed
                res.selected = [os.path.basename(i.image_path) for i in chosen]
            results.append(res)
            log(f"{strategy:>10}  round {r}  labeled {res.labeled:4d}  mAP50 {res.mAP:.4f}  model {res.model_hash[:12]}")
    return results


def table(results: List[RoundResult]) -> str:
    """round | labeled | mAP50 per strategy, as text."""
    strategies = list(dict.fromkeys(r.strategy for r in results))
    rounds = sorted({r.round for r in results})
    lines = ["round  labeled  " + "  ".join(f"{s:>10}" for s in strategies)]
    for k in rounds:
        row = {r.strategy: r for r in results if r.round == k}
        labeled = next(iter(row.values())).labeled
        lines.append(f"{k:5d}  {labeled:7d}  " + "  ".join(f"{row[s].mAP:10.4f}" if s in row else " " * 10
                                                         for s in strategies))
    return "\n".join(lines)


def write_outputs(results: List[RoundResult], out_dir: Path, meta: Dict[str, Any]) -> Dict[str, Path]:
    """``loop.json`` (every figure) and ``loop.png`` (mAP50 vs labeled images)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "loop.json"}
    paths["json"].write_text(json.dumps({"meta": meta, "rounds": [asdict(r) for r in results]}, indent=2),
                             encoding="utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return paths
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for s in dict.fromkeys(r.strategy for r in results):
        pts = [(r.labeled, r.mAP) for r in results if r.strategy == s]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=s)
    ax.set_xlabel("labeled training images")
    ax.set_ylabel("mAP50 on val")
    ax.set_title(f"{meta.get('executor', '')} on {meta.get('dataset', '')} (seed {meta.get('seed')})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths["png"] = out_dir / "loop.png"
    fig.savefig(paths["png"])
    plt.close(fig)
    return paths
