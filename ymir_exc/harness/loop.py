"""``ymir-exc loop``: the data-centric iteration YMIR exists for, measured.

Split a dataset's labeled training images into a small initial set and a pool whose labels are
hidden. Each round: train (from scratch, or continuing from the previous round's model), evaluate
on the fixed val set (the executor's reported mAP of its best stage, i.e. mAP50 on val for the
bundled executors), mine the top-k of the pool with the executor's mining task, "label" them by
revealing their held-out ground truth, and merge them into the training set. ``--baseline
random`` runs the same rounds selecting k pool images at random (same seed, same initial set).

Every step goes through the same prepare / run / collect as ``ymir-exc run``; every round's model
is a stored model package. ``--seeds 0,1,2`` repeats the whole comparison with several initial
splits. Outputs: a table, ``loop.json`` (rewritten after every round: settings, every figure and
the images each round selected, so ``--resume`` continues an interrupted loop) and a PNG plot of
mAP50 against the number of labeled images (mean and spread over the seeds; matplotlib).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ymir_exc._io import atomic_write
from ymir_exc.harness.datasets import Dataset, Item
from ymir_exc.harness.executors import LocalExecutor
from ymir_exc.harness.models import ModelStore
from ymir_exc.harness.pipeline import TaskOutcome, run_task

#: settings a resumed loop must share with the one it continues
RESUME_KEYS = ("executor", "dataset", "initial", "rounds", "topk", "strategies", "seeds", "continue_training")


@dataclass
class RoundResult:
    """One (strategy, seed, round): labeled count, mAP50 on val, the model and what was selected
    (full image paths, in the order they were picked)."""

    strategy: str
    round: int
    labeled: int
    mAP: float
    model_hash: str
    train_seconds: float
    mine_seconds: float = 0.0
    selected: List[str] = field(default_factory=list)
    seed: int = 0


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
    if r is not None and r.interrupted:
        raise KeyboardInterrupt
    if r is None or not r.ok:
        tail = r.log_tail(10) if r else ""
        raise LoopError(f"{what} failed (exit code {r.exit_code if r else '?'}; work dir {outcome.prepared.work_dir})"
                        f"\n{tail}")
    if outcome.problems:
        raise LoopError(f"{what}: outputs break the contract: " + "; ".join(outcome.problems[:3]))


def round_dir(out_dir: Path, strategy: str, seed: int, r: int, several_seeds: bool) -> Path:
    """``OUT/<strategy>/round_<r>`` (one seed) or ``OUT/seed_<s>/<strategy>/round_<r>``."""
    return (out_dir / f"seed_{seed}" if several_seeds else out_dir) / strategy / f"round_{r}"


def run_loop(executor: LocalExecutor, runtime: str, ds: Dataset, *, initial: int, rounds: int, topk: int,
             strategies: List[str], seed: int = 0, out_dir: Path, store: ModelStore,
             user_config: Optional[Dict[str, Any]] = None, continue_training: bool = False,
             show: bool = False, log: Callable[[str], None] = print, seeds: Optional[Sequence[int]] = None,
             done: Optional[List[RoundResult]] = None,
             on_round: Optional[Callable[[List[RoundResult]], None]] = None) -> List[RoundResult]:
    """Run the loop for every seed and strategy (``random`` = harness-side random selection;
    anything else is the executor's ``mining_algorithm``).

    Args:
        seeds: the initial splits to run (default ``[seed]``); each seed gives the same initial
            set to every strategy.
        done: rounds already finished (from loop.json): they are not run again, and their
            selections rebuild the labeled set, so a resumed loop continues where it stopped.
        on_round: called with every result so far after each finished round (writes loop.json).

    Returns:
        one RoundResult per (seed, strategy, round), in run order.

    Raises:
        ValueError: bad sizes; LoopError: a step failed; KeyboardInterrupt: Ctrl-C (the
        results so far were handed to ``on_round``).
    """
    seeds = list(seeds) if seeds else [seed]
    several = len(seeds) > 1
    results: List[RoundResult] = list(done or [])
    finished = {(r.seed, r.strategy, r.round): r for r in results}
    for s in seeds:
        init, pool0 = split_initial(ds, initial, s)
        if rounds * topk > len(pool0):
            raise ValueError(f"{rounds} rounds x top-{topk} = {rounds * topk} images, but the pool holds {len(pool0)}")
        for strategy in strategies:
            labeled, pool = list(init), list(pool0)
            prev_model: Optional[str] = None
            for r in range(rounds + 1):
                tag = f"{strategy} seed {s} round {r}/{rounds}"
                prior = finished.get((s, strategy, r))
                if prior is not None:  # resumed: replay its selection
                    chosen_paths = set(prior.selected)
                    chosen = [i for i in pool if i.image_path in chosen_paths]
                    pool = [i for i in pool if i.image_path not in chosen_paths]
                    labeled = labeled + chosen
                    prev_model = prior.model_hash
                    continue
                base = round_dir(out_dir, strategy, s, r, several)
                if base.exists():  # an interrupted attempt: start this round afresh
                    shutil.rmtree(base)
                log(f"loop: {tag}: training on {len(labeled)} labeled images")
                train_ds = Dataset(f"{ds.name}-{strategy}-s{s}-r{r}", ds.class_names, labeled, ds.val, [])
                cfg = dict(user_config or {})
                trained = run_task(executor, runtime, ["training"], train_ds, work_dir=base / "train", store=store,
                                   user_config=cfg, model_ref=prev_model if continue_training else None, show=show)
                _require_ok(trained, f"{tag}: training")
                assert trained.training is not None and trained.training.model_hash is not None
                assert trained.run is not None
                res = RoundResult(strategy, r, len(labeled), trained.training.mAP, trained.training.model_hash,
                                  round(trained.run.seconds, 2), seed=s)
                prev_model = res.model_hash
                if r < rounds:
                    if strategy == "random":
                        picked = random.Random(f"{s}-{r}").sample(range(len(pool)), topk)
                        chosen = [pool[i] for i in sorted(picked)]
                    else:
                        log(f"loop: {tag}: mining {len(pool)} pool images ({strategy})")
                        chosen, res.mine_seconds = _mine(executor, runtime, ds, pool, strategy, cfg, res.model_hash,
                                                         base / "mine", store, show, topk, tag)
                    ids = {id(i) for i in chosen}
                    pool = [i for i in pool if id(i) not in ids]
                    labeled = labeled + chosen  # "labeling": their held-out ground truth is revealed
                    res.selected = [i.image_path for i in chosen]
                results.append(res)
                if on_round is not None:  # saved before it is announced
                    on_round(results)
                log(f"{strategy:>10}  seed {s}  round {r}  labeled {res.labeled:4d}  mAP50 {res.mAP:.4f}  "
                    f"model {res.model_hash[:12]}")
    return results


def _mine(executor: LocalExecutor, runtime: str, ds: Dataset, pool: List[Item], strategy: str, cfg: Dict[str, Any],
          model: str, work: Path, store: ModelStore, show: bool, topk: int, tag: str) -> Tuple[List[Item], float]:
    mine_ds = Dataset(f"{ds.name}-pool", ds.class_names, [], [], [Item(i.image_path) for i in pool])
    mined = run_task(executor, runtime, ["mining"], mine_ds, work_dir=work, store=store,
                     user_config=dict(cfg, mining_algorithm=strategy), model_ref=model, show=show)
    _require_ok(mined, f"{tag}: mining")
    assert mined.mining is not None and mined.run is not None
    sources = mined.prepared.stats.sources if mined.prepared.stats else {}
    by_path: Dict[str, List[Item]] = {}
    for it in pool:
        by_path.setdefault(it.image_path, []).append(it)
    chosen: List[Item] = []
    for asset, _score in mined.mining.ranked:
        src = sources.get(os.path.basename(asset))
        while src in by_path and by_path[src] and len(chosen) < topk:
            chosen.append(by_path[src].pop())
        if len(chosen) >= topk:
            break
    if len(chosen) < topk:
        raise LoopError(f"{tag}: mining ranked only {len(chosen)} pool images, need {topk}")
    return chosen, round(mined.run.seconds, 2)


def _series(results: List[RoundResult], strategy: str) -> List[Tuple[int, int, List[float]]]:
    """[(round, labeled, [mAP per seed])] of one strategy."""
    by_round: Dict[int, List[RoundResult]] = {}
    for r in results:
        if r.strategy == strategy:
            by_round.setdefault(r.round, []).append(r)
    return [(k, v[0].labeled, [x.mAP for x in v]) for k, v in sorted(by_round.items())]


def table(results: List[RoundResult]) -> str:
    """round | labeled | mAP50 per strategy (mean +- standard deviation over seeds), as text."""
    strategies = list(dict.fromkeys(r.strategy for r in results))
    several = len({r.seed for r in results}) > 1
    width = 16 if several else 10
    rounds = sorted({r.round for r in results})
    series = {s: {k: (n, v) for k, n, v in _series(results, s)} for s in strategies}
    lines = ["round  labeled  " + "  ".join(f"{s:>{width}}" for s in strategies)]
    for k in rounds:
        labeled = next(series[s][k][0] for s in strategies if k in series[s])
        cells = []
        for s in strategies:
            if k not in series[s]:
                cells.append(" " * width)
                continue
            v = series[s][k][1]
            cell = f"{statistics.fmean(v):.4f}" + (f" +- {statistics.pstdev(v):.4f}" if several else "")
            cells.append(f"{cell:>{width}}")
        lines.append(f"{k:5d}  {labeled:7d}  " + "  ".join(cells))
    return "\n".join(lines)


def write_json(results: List[RoundResult], out_dir: Path, meta: Dict[str, Any], complete: bool) -> Path:
    """``loop.json`` (settings, every round, ``complete``), written atomically."""
    path = out_dir / "loop.json"
    atomic_write(path, json.dumps({"meta": meta, "complete": complete, "rounds": [asdict(r) for r in results]},
                                  indent=2))
    return path


def read_json(out_dir: Path) -> Tuple[Dict[str, Any], List[RoundResult]]:
    """(meta, finished rounds) of ``OUT/loop.json``.

    Raises:
        FileNotFoundError: no loop.json there; ValueError: it does not parse.
    """
    path = out_dir / "loop.json"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no loop.json in {out_dir}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return dict(data["meta"]), [RoundResult(**r) for r in data["rounds"]]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a loop.json of ymir-exc ({e})") from None


def plot(results: List[RoundResult], meta: Dict[str, Any]) -> Any:
    """The loop's figure (a matplotlib Figure): mAP50 against labeled images per strategy, the
    mean over seeds with its min-max band, random drawn dashed as the baseline, y from 0, ticks
    at the labeled counts, the val size and seeds in the caption.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ticks = set()
    for s in dict.fromkeys(r.strategy for r in results):
        pts = _series(results, s)
        xs = [n for _, n, _ in pts]
        ticks.update(xs)
        mean = [statistics.fmean(v) for _, _, v in pts]
        baseline = s == "random"
        line, = ax.plot(xs, mean, marker="o", linestyle="--" if baseline else "-",
                        label=f"{s} (baseline)" if baseline else s)
        if any(len(v) > 1 for _, _, v in pts):
            ax.fill_between(xs, [min(v) for _, _, v in pts], [max(v) for _, _, v in pts], alpha=0.2,
                            color=line.get_color())
    ax.set_xticks(sorted(ticks))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("labeled training images")
    ax.set_ylabel("mAP50 on val")
    seeds = sorted({r.seed for r in results})
    ax.set_title(f"{meta.get('executor', '')} on {meta.get('dataset', '')}")
    caption = f"val: {meta.get('val_images', '?')} images; top-{meta.get('topk', '?')} per round; " + (
        f"mean and min-max over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]}")
    fig.text(0.5, 0.01, caption, ha="center", fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def write_outputs(results: List[RoundResult], out_dir: Path, meta: Dict[str, Any]) -> Dict[str, Path]:
    """``loop.json`` (complete) and ``loop.png`` (:func:`plot`; skipped without matplotlib)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(results, out_dir, meta, complete=True)}
    try:
        fig = plot(results, meta)
    except ImportError:
        return paths
    import matplotlib.pyplot as plt

    paths["png"] = out_dir / "loop.png"
    fig.savefig(paths["png"])
    plt.close(fig)
    return paths
