"""``ymir-exc loop``: the data-centric iteration YMIR exists for, measured.

Split a dataset's labeled training images into a held-out test set (``--test-split``), a small
initial set and a pool whose labels are hidden. Each round: train (from scratch, or continuing
from the previous round's model), read the executor's reported mAP of its best stage on the
fixed val set (val picks the stage), score that stage and the last stage on the test set (the
executor's infer task, mAP50 by :mod:`ymir_exc.metrics`), mine the top-k of the pool with the
executor's mining task, "label" them by revealing their held-out ground truth, and merge them
into the training set. ``--baseline random-harness`` runs the same rounds selecting k pool
images at random in the harness, from a stream of its own (:func:`baseline_pick`); an
executor's own ``random`` mining is an algorithm like any other.

Per seed (``--seeds 0,1,2``): the initial split, the baseline's picks, the executor's training
seed and the seed of its own ``random`` mining (:data:`SEED_KEYS`, where the executor's templates
declare them) all follow the seed; round 0 is trained once and shared by every strategy (it is
the same training). Tables give the mean +- sample SD over the seeds; the verdict
(:func:`paired_gaps`) a 95 % t-interval of the paired per-seed gaps to the baseline.
The test set is the same for every seed. Images are checked by content (sha1): no image may be
in two of train / val / test / pool (:func:`check_disjoint`).

Every step goes through the same prepare / run / collect as ``ymir-exc run``; every round's model
is a stored model package. Outputs: a table, ``loop.json`` (rewritten after every round: settings,
every figure and the images each round selected, so ``--resume`` continues an interrupted loop)
and a PNG plot of mAP50 against the number of labeled images (mean and spread over the seeds;
matplotlib).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ymir_exc._io import atomic_write
from ymir_exc.errors import AnnotationError
from ymir_exc.harness.collect import TrainingReport
from ymir_exc.harness.datasets import Dataset, Item, first_few, split_clashes
from ymir_exc.harness.executors import LocalExecutor
from ymir_exc.harness.options import RunOptions
from ymir_exc.harness.pipeline import TaskOutcome, run_task

#: settings a resumed loop must share with the one it continues
RESUME_KEYS = (
    "executor",
    "dataset",
    "initial",
    "rounds",
    "topk",
    "strategies",
    "seeds",
    "continue_training",
    "test_split",
)
#: the harness-side random baseline's strategy name (``--baseline random-harness``)
BASELINE = "random-harness"
#: score threshold of the test-set inference (when the executor's infer template declares
#: ``conf_threshold``): low, so the precision / recall curve behind mAP50 is complete, as
#: Ultralytics' and the demo's own validation do
TEST_CONF_THRESHOLD = 0.001
#: fewer test images than this and the loop warns (a mAP50 on a handful of images is mostly noise)
MIN_TEST_IMAGES = 5
#: the config keys a loop sets to the seed, per task: the training seed (``seed``) and the seed of
#: the executor's own ``random`` mining (``random_seed``), each only when the executor's template of
#: that task declares it (both bundled executors declare both)
SEED_KEYS = {"training": "seed", "mining": "random_seed"}
#: two-sided 95 % critical values of Student's t, t_{0.975, df} for df = 1 .. 30 (NIST/SEMATECH
#: e-Handbook of Statistical Methods, section 1.3.6.7.2, "Critical Values of the Student's t
#: Distribution"); for df > 30 the df = 30 value is used (at most 4 % wider than the exact one)
T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


@dataclass
class RoundResult:
    """One (strategy, seed, round): labeled count, the best stage's mAP50 on val (``mAP``), test
    mAP50 of the best and the last stage (None without a test split), the model and what was
    selected (full image paths, in the order they were picked). ``shared``: round 0 (every
    strategy's row of it), trained once for the seed and reported under every strategy."""

    strategy: str
    round: int
    labeled: int
    mAP: float
    model_hash: str
    train_seconds: float
    mine_seconds: float = 0.0
    selected: list[str] = field(default_factory=list)
    seed: int = 0
    best_stage: str = ""
    last_stage: str = ""
    test_best: float | None = None
    test_last: float | None = None
    shared: bool = False


class LoopError(RuntimeError):
    """A step of the loop failed; the message says which round, strategy and step."""


def parse_test_split(text: str) -> float:
    """``--test-split``: an integer >= 1 is a count of images (``12``, an int); a number written
    with a point or an exponent is a fraction of the labeled training images and must be in
    (0, 1) exclusive (``0.2``, a float), so ``1.0`` (one image or all of them?) is refused.

    Raises:
        ValueError: neither an integer >= 1 nor a fraction in (0, 1).
    """
    hint = "expected a number of images (an integer >= 1, e.g. 12) or a fraction in (0, 1) (e.g. 0.2)"
    text = text.strip()
    try:
        count = int(text)
    except ValueError:
        pass
    else:
        if count < 1:
            raise ValueError(f"--test-split {text!r}: {hint}")
        return count
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"--test-split {text!r}: {hint}") from None
    if not (math.isfinite(v) and 0 < v < 1):
        raise ValueError(f"--test-split {text!r}: {hint}")
    return v


def split_test(ds: Dataset, test_split: float | None) -> tuple[Dataset, list[Item]]:
    """(the dataset without its test images, the test images): ``test_split`` images (a count, or
    a fraction of ``ds.train`` rounded) of the labeled training images, drawn by a fixed stream
    (``random.Random("ymir-exc-loop:test")`` over the images sorted by path), the same for every
    seed. ``None`` or 0: no test set.

    Raises:
        ValueError: the test set would take every training image (or none).
    """
    if not test_split:
        return ds, []
    n = int(test_split) if test_split >= 1 else round(test_split * len(ds.train))
    if not 0 < n < len(ds.train):
        raise ValueError(
            f"--test-split {test_split:g} gives {n} test images; the dataset has {len(ds.train)} "
            f"training images (a test set needs at least 1 and must leave some)"
        )
    order = sorted(ds.train, key=lambda i: i.image_path)
    random.Random("ymir-exc-loop:test").shuffle(order)
    test = order[:n]
    chosen = {id(i) for i in test}
    rest = [i for i in ds.train if id(i) not in chosen]
    return Dataset(ds.name, list(ds.class_names), rest, list(ds.val), list(ds.candidate), list(ds.notes)), test


def split_initial(ds: Dataset, initial: int, seed: int) -> tuple[Any, ...]:
    """(initial labeled items, pool items): a seeded shuffle (``random.Random(seed)``) of the
    training images sorted by path.

    Raises:
        ValueError: ``initial`` is not smaller than the number of training images.
    """
    if not 0 < initial < len(ds.train):
        raise ValueError(
            f"--initial must be between 1 and {len(ds.train) - 1} (the dataset has {len(ds.train)} "
            f"training images), got {initial}"
        )
    order = sorted(ds.train, key=lambda i: i.image_path)
    random.Random(seed).shuffle(order)
    return order[:initial], order[initial:]


def baseline_pick(pool: Sequence[Item], topk: int, seed: int, rnd: int) -> list[Item]:
    """The harness baseline's ``topk`` picks of ``pool`` in round ``rnd``: a uniform sample
    without replacement of the pool sorted by path, drawn from
    ``random.Random(f"{seed}:baseline:{rnd}")``. That stream is independent of the split's
    (``random.Random(seed)``; Python hashes a str seed with SHA-512) and of the pool's order, and
    one per round, so a resumed loop draws what an uninterrupted one would."""
    order = sorted(pool, key=lambda i: i.image_path)
    picked = random.Random(f"{seed}:baseline:{rnd}").sample(range(len(order)), topk)
    return [order[i] for i in sorted(picked)]


def check_disjoint(splits: dict[str, Sequence[Item]]) -> None:
    """Refuse any image that is in two of ``splits`` (e.g. train / val / test / pool), by path or
    by content (sha1 of the bytes; computed once and kept in ``Item.sha1``).

    Raises:
        AnnotationError: the overlapping files, named with their splits (key ``splits``).
    """
    from ymir_exc.harness.files import sha1_file

    where: dict[str, list[tuple[str, str]]] = {}
    for name, items in splits.items():
        for it in items:
            if it.sha1 is None:
                it.sha1 = sha1_file(it.image_path)
            where.setdefault(it.sha1, []).append((name, it.image_path))
    clashes = split_clashes(where)
    if clashes:
        raise AnnotationError(
            f"{len(clashes)} image(s) are in more than one of {' / '.join(splits)} (same bytes): " + first_few(clashes),
            key="splits",
        )


def _require_ok(outcome: TaskOutcome, what: str) -> None:
    r = outcome.run
    if r is not None and r.interrupted:
        raise KeyboardInterrupt
    if r is None or not r.ok:
        tail = r.log_tail(10) if r else ""
        raise LoopError(
            f"{what} failed (exit code {r.exit_code if r else '?'}; work dir {outcome.prepared.work_dir})\n{tail}"
        )
    if outcome.problems:
        raise LoopError(f"{what}: outputs break the contract: " + "; ".join(outcome.problems[:3]))


def round_dir(out_dir: Path, strategy: str, seed: int, r: int, several_seeds: bool) -> Path:
    """``OUT/<strategy>/round_<r>`` (one seed) or ``OUT/seed_<s>/<strategy>/round_<r>``; round 0,
    shared by the strategies, is ``OUT[/seed_<s>]/round_0``."""
    base = out_dir / f"seed_{seed}" if several_seeds else out_dir
    return base / "round_0" if r == 0 else base / strategy / f"round_{r}"


def seed_keys(executor: LocalExecutor) -> dict[str, str]:
    """The :data:`SEED_KEYS` (task -> config key) whose task template in the executor declares
    the key; the loop sets each of them to the loop's seed."""
    templates = executor.templates()
    return {task: key for task, key in SEED_KEYS.items() if key in (templates.get(task) or {})}


@dataclass(frozen=True)
class LoopPlan:
    """What a loop runs (the settings ``--resume`` checks against loop.json, :data:`RESUME_KEYS`).

    Attributes:
        initial: labeled training images to start with (1 .. training images - 1).
        rounds: mining rounds (trainings = rounds + 1).
        topk: images mined and labeled per round.
        strategies: :data:`BASELINE` (harness-side random selection) and / or the executor's
            ``mining_algorithm`` names (``random`` included).
        seeds: the seeds to run (default ``(0,)``); each seed gives the same initial set and the
            same round-0 model to every strategy, and is the training seed (config key ``seed``)
            and the seed of the executor's ``random`` mining (``random_seed``) when the
            executor declares them (:data:`SEED_KEYS`).
        continue_training: train each round from the previous round's model (default: from
            scratch).
        test_split: held-out test images (count or fraction, :func:`split_test`); None: none.
    """

    initial: int
    rounds: int
    topk: int
    strategies: Sequence[str]
    seeds: Sequence[int] = (0,)
    continue_training: bool = False
    test_split: float | None = None


def run_loop(
    executor: LocalExecutor,
    ds: Dataset,
    plan: LoopPlan,
    options: RunOptions,
    *,
    out_dir: Path,
    log: Callable[[str], None] = print,
    done: list[RoundResult] | None = None,
    on_round: Callable[[list[RoundResult]], None] | None = None,
) -> list[RoundResult]:
    """Run the loop for every seed and strategy of ``plan`` (:data:`BASELINE` = harness-side random
    selection; anything else, ``random`` included, is the executor's ``mining_algorithm``).

    Args:
        options: how each task runs (``options.runtime`` resolved); ``options.model_location``
            holds every round's model (None: ``out_dir/models``).
        out_dir: the rounds' work dirs (:func:`round_dir`).
        done: rounds already finished (from loop.json): they are not run again, and their
            selections rebuild the labeled set, so a resumed loop continues where it stopped.
        on_round: called with every result so far after each finished round (writes loop.json).

    Returns:
        one RoundResult per (seed, strategy, round), in run order.

    Raises:
        ValueError: bad sizes; AnnotationError: an image in two splits; LoopError: a step
        failed; KeyboardInterrupt: Ctrl-C (the results so far were handed to ``on_round``).
    """
    if options.model_location is None:
        options = replace(options, model_location=out_dir / "models")
    ds, test = split_test(ds, plan.test_split)
    results: list[RoundResult] = list(done or [])
    keys = seed_keys(executor)
    for task, key in SEED_KEYS.items():
        if task not in keys:
            log(
                f"loop: {executor.name}'s {task} template declares no {key!r}: every seed runs {task} with the "
                f"executor's own randomness"
            )
        elif key in options.user_config:
            log(f"loop: the config's {key}: {options.user_config[key]!r} is replaced by the loop's seed")
    for s in plan.seeds:
        init, pool0 = split_initial(ds, plan.initial, s)
        if plan.rounds * plan.topk > len(pool0):
            raise ValueError(
                f"{plan.rounds} rounds x top-{plan.topk} = {plan.rounds * plan.topk} images, "
                f"but the pool holds {len(pool0)}"
            )
        check_disjoint({"initial": init, "pool": pool0, "val": ds.val, "test": test})
        cfg = dict(options.user_config)
        cfg.update({key: s for key in keys.values()})
        run = _SeedRun(executor, ds, test, plan, replace(options, user_config=cfg), out_dir, s, log, on_round)
        for strategy in plan.strategies:
            run.strategy(strategy, init, pool0, results)
    return results


@dataclass
class _SeedRun:
    """The rounds of one seed: the state every strategy's rounds share."""

    executor: LocalExecutor
    ds: Dataset
    test: list[Item]
    plan: LoopPlan
    options: RunOptions  # the seed's: its config sets the training seed
    out_dir: Path
    seed: int
    log: Callable[[str], None]
    on_round: Callable[[list[RoundResult]], None] | None

    def strategy(self, strategy: str, init: list[Item], pool0: list[Item], results: list[RoundResult]) -> None:
        """Every round of ``strategy`` for this seed, appended to ``results``; the rounds already in
        ``results`` are replayed (their selections rebuild the labeled set), round 0 is shared."""
        s, rounds = self.seed, self.plan.rounds
        finished = {r.round: r for r in results if r.seed == s and r.strategy == strategy}
        labeled, pool = list(init), list(pool0)
        prev_model: str | None = None
        for r in range(rounds + 1):
            prior = finished.get(r)
            if prior is not None:  # resumed: replay its selection, in the order it was picked
                by_path = {i.image_path: i for i in pool}
                labeled += [by_path[p] for p in prior.selected if p in by_path]
                chosen_paths = set(prior.selected)
                pool = [i for i in pool if i.image_path not in chosen_paths]
                prev_model = prior.model_hash
                continue
            tag = f"{strategy} seed {s} round {r}/{rounds}"
            base = round_dir(self.out_dir, strategy, s, r, len(self.plan.seeds) > 1)
            round0 = next((x for x in results if x.seed == s and x.round == 0), None)
            if r == 0 and round0 is not None:  # the same training for every strategy
                res = replace(round0, strategy=strategy, selected=[], mine_seconds=0.0, shared=True)
                self.log(f"loop: {tag}: round 0 shared (model {res.model_hash[:12]})")
            else:
                if base.exists():  # an interrupted attempt: start this round afresh
                    shutil.rmtree(base)
                check_disjoint({"train": labeled, "val": self.ds.val, "test": self.test, "pool": pool})
                model_ref = prev_model if self.plan.continue_training else None
                res = self.train_and_test(labeled, strategy, r, base, model_ref, tag)
                res.shared = r == 0  # round 0 is every strategy's: the same training
            prev_model = res.model_hash
            if r < rounds:
                chosen = self.select(pool, strategy, r, res, base, tag)
                ids = {id(i) for i in chosen}
                pool = [i for i in pool if id(i) not in ids]
                labeled = labeled + chosen  # "labeling": their held-out ground truth is revealed
                res.selected = [i.image_path for i in chosen]
            results.append(res)
            self.announce(res, results)

    def select(self, pool: list[Item], strategy: str, r: int, res: RoundResult, base: Path, tag: str) -> list[Item]:
        """The round's ``topk`` picks of ``pool``: the harness baseline's, or the executor's mining
        (its time set in ``res.mine_seconds``)."""
        if strategy == BASELINE:
            return baseline_pick(pool, self.plan.topk, self.seed, r)
        self.log(f"loop: {tag}: mining {len(pool)} pool images ({strategy})")
        work = base / f"mine-{strategy}" if r == 0 else base / "mine"
        chosen, res.mine_seconds = self.mine(pool, strategy, res.model_hash, work, tag)
        return chosen

    def announce(self, res: RoundResult, results: list[RoundResult]) -> None:
        """Save (``on_round``), then log the finished round."""
        if self.on_round is not None:  # saved before it is announced
            self.on_round(results)
        figures = f"val mAP50 {res.mAP:.4f}" + (
            "" if res.test_best is None else f"  test mAP50 best {res.test_best:.4f} last {res.test_last:.4f}"
        )
        self.log(
            f"{res.strategy:>10}  seed {res.seed}  round {res.round}  labeled {res.labeled:4d}  {figures}  "
            f"model {res.model_hash[:12]}"
        )

    def train_and_test(
        self, labeled: list[Item], strategy: str, r: int, base: Path, model_ref: str | None, tag: str
    ) -> RoundResult:
        """Train on ``labeled`` (val picks the best stage), then score the best and the last stage
        on the test set (when there is one)."""
        ds, s = self.ds, self.seed
        self.log(f"loop: {tag}: training on {len(labeled)} labeled images")
        train_ds = Dataset(f"{ds.name}-s{s}-r{r}", ds.class_names, labeled, ds.val, [])
        trained = run_task(
            self.executor, ["training"], train_ds, self.options, work_dir=base / "train", model_ref=model_ref
        )
        _require_ok(trained, f"{tag}: training")
        rep = trained.training
        assert rep is not None and rep.model_hash is not None and trained.run is not None
        last = _last_stage(rep)
        res = RoundResult(
            strategy,
            r,
            len(labeled),
            rep.mAP,
            rep.model_hash,
            round(trained.run.seconds, 2),
            seed=s,
            best_stage=rep.best_stage_name,
            last_stage=last,
        )
        if self.test:
            self.log(
                f"loop: {tag}: scoring stages {rep.best_stage_name}"
                + (f" and {last}" if last != rep.best_stage_name else "")
                + f" on {len(self.test)} test images"
            )
            best_ref = f"{rep.model_hash}@{rep.best_stage_name}"
            res.test_best = score_on_test(self.executor, ds, self.test, best_ref, self.options, base / "test-best", tag)
            res.test_last = (
                res.test_best
                if last == rep.best_stage_name
                else score_on_test(
                    self.executor, ds, self.test, f"{rep.model_hash}@{last}", self.options, base / "test-last", tag
                )
            )
        return res

    def mine(self, pool: list[Item], strategy: str, model: str, work: Path, tag: str) -> tuple[list[Item], float]:
        """The executor's mining of ``pool`` with ``strategy``: (its top-k pool items, seconds)."""
        if work.exists():  # an interrupted attempt
            shutil.rmtree(work)
        ds, topk = self.ds, self.plan.topk
        mine_ds = Dataset(f"{ds.name}-pool", ds.class_names, [], [], [Item(i.image_path) for i in pool])
        options = replace(self.options, user_config=dict(self.options.user_config, mining_algorithm=strategy))
        mined = run_task(self.executor, ["mining"], mine_ds, options, work_dir=work, model_ref=model)
        _require_ok(mined, f"{tag}: mining")
        assert mined.mining is not None and mined.run is not None
        sources = mined.prepared.stats.sources if mined.prepared.stats else {}
        by_path: dict[str, list[Item]] = {}
        for it in pool:
            by_path.setdefault(it.image_path, []).append(it)
        chosen: list[Item] = []
        for asset, _score in mined.mining.ranked:
            src = sources.get(os.path.basename(asset))
            while src in by_path and by_path[src] and len(chosen) < topk:
                chosen.append(by_path[src].pop())
            if len(chosen) >= topk:
                break
        if len(chosen) < topk:
            raise LoopError(f"{tag}: mining ranked only {len(chosen)} pool images, need {topk}")
        return chosen, round(mined.run.seconds, 2)


def _last_stage(rep: TrainingReport) -> str:
    """The last stage written: the newest timestamp, on a tie (stages written within a second) the
    later one in result.yaml's order, as the platform orders them; the best stage without any."""
    stages = list(rep.stages.values())
    if not stages:
        return str(rep.best_stage_name)
    return str(stages[max(range(len(stages)), key=lambda i: (stages[i].timestamp, i))].stage_name)


def score_on_test(
    executor: LocalExecutor,
    ds: Dataset,
    test: list[Item],
    model_ref: str,
    options: RunOptions,
    work: Path,
    tag: str,
) -> float:
    """mAP50 of ``model_ref`` (``HASH@STAGE``) on ``test``: the executor's infer task on the test
    images (their labels stay in the harness; ``conf_threshold`` lowered to
    :data:`TEST_CONF_THRESHOLD` when the infer template declares it), then
    :func:`ymir_exc.metrics.evaluate_detections` (VOC AP at IoU 0.5, mean over the classes with
    ground truth) against the test labels.

    Raises:
        LoopError: the infer task failed or its output breaks the contract.
    """
    from ymir_exc.metrics import evaluate_detections

    test_ds = Dataset(f"{ds.name}-test", ds.class_names, [], [], [Item(i.image_path) for i in test])
    if "conf_threshold" in (executor.templates().get("infer") or {}):
        options = replace(options, user_config=dict(options.user_config, conf_threshold=TEST_CONF_THRESHOLD))
    out = run_task(executor, ["infer"], test_ds, options, work_dir=work, model_ref=model_ref)
    _require_ok(out, f"{tag}: test inference ({model_ref})")
    # the harness checked the file (no problems, else _require_ok raised); a test split is small
    infer_file = out.prepared.work_dir / "out" / "infer-result.json"
    detection = json.loads(infer_file.read_text(encoding="utf-8")).get("detection", {})
    sources = out.prepared.stats.sources if out.prepared.stats else {}
    truth = {i.image_path: i.boxes for i in test}
    found: dict[str, list[tuple[str, float, int, int, int, int]]] = {}
    for key, entry in detection.items():
        boxes = entry.get("boxes", entry.get("annotations", []))
        src = sources.get(os.path.basename(key))
        if src not in truth:
            raise LoopError(f"{tag}: test inference returned {key!r}, not a test image")
        found[src] = [
            (b["class_name"], float(b["score"]), b["box"]["x"], b["box"]["y"], b["box"]["w"], b["box"]["h"])
            for b in boxes
            if "box" in b
        ]
    return float(evaluate_detections(found, truth, classes=list(ds.class_names))["mAP"])


#: the figures a table / plot can show: RoundResult attribute -> what it is
METRICS = {
    "test_best": "mAP50 on test, stage picked on val",
    "test_last": "mAP50 on test, last stage",
    "mAP": "mAP50 on val, best stage",
}


def _series(results: list[RoundResult], strategy: str, metric: str = "mAP") -> list[tuple[int, int, list[float]]]:
    """[(round, labeled, [``metric`` per seed])] of one strategy (rounds without it left out)."""
    by_round: dict[int, list[RoundResult]] = {}
    for r in results:
        if r.strategy == strategy and getattr(r, metric) is not None:
            by_round.setdefault(r.round, []).append(r)
    return [(k, v[0].labeled, [getattr(x, metric) for x in v]) for k, v in sorted(by_round.items())]


def metrics_of(results: list[RoundResult]) -> list[str]:
    """The :data:`METRICS` the results carry, test first."""
    return [m for m in METRICS if any(getattr(r, m) is not None for r in results)]


def table(results: list[RoundResult], metric: str = "mAP") -> str:
    """round | labeled | ``metric`` per strategy (mean +- sample standard deviation over the
    seeds, ``statistics.stdev``, n - 1 in the denominator; the mean alone with one seed), as
    text."""
    strategies = list(dict.fromkeys(r.strategy for r in results))
    several = len({r.seed for r in results}) > 1
    width = max([16 if several else 10] + [len(s) for s in strategies])
    rounds = sorted({r.round for r in results})
    series = {s: {k: (n, v) for k, n, v in _series(results, s, metric)} for s in strategies}
    lines = ["round  labeled  " + "  ".join(f"{s:>{width}}" for s in strategies)]
    for k in rounds:
        labeled = next((series[s][k][0] for s in strategies if k in series[s]), None)
        if labeled is None:
            continue
        cells = []
        for s in strategies:
            if k not in series[s]:
                cells.append(" " * width)
                continue
            v = series[s][k][1]
            cell = f"{statistics.fmean(v):.4f}" + (f" +- {statistics.stdev(v):.4f}" if len(v) > 1 else "")
            cells.append(f"{cell:>{width}}")
        lines.append(f"{k:5d}  {labeled:7d}  " + "  ".join(cells))
    return "\n".join(lines)


def t975(df: int) -> float:
    """The two-sided 95 % critical value of Student's t with ``df`` >= 1 degrees of freedom
    (:data:`T975`; the df = 30 value beyond 30).

    Raises:
        ValueError: ``df`` < 1.
    """
    if df < 1:
        raise ValueError(f"Student's t needs at least 1 degree of freedom, got {df}")
    return T975[min(df, len(T975)) - 1]


def paired_gaps(results: list[RoundResult], metric: str = "mAP", baseline: str = BASELINE) -> list[dict[str, Any]]:
    """Per mining strategy, its gap to ``baseline`` at the last round, paired by seed: each seed's
    difference (strategy minus baseline at the same seed and round: the same split, the same
    round-0 model), their mean, sample standard deviation (n - 1) and the 95 % t-interval of the
    mean (``mean +- t975(n - 1) * sd / sqrt(n)``). ``exceeds``: the interval excludes 0 (the gap
    exceeds the seed-to-seed noise); None with fewer than 2 paired seeds (no spread to compare
    against; ``sd`` and ``ci95`` are None then). Empty without the baseline.

    Returns:
        ``[{"strategy", "baseline", "metric", "round", "seeds", "diffs", "mean", "sd", "ci95",
        "exceeds"}]``, one per strategy, in the results' order.
    """
    last = max((r.round for r in results), default=0)
    at: dict[str, dict[int, float]] = {}
    for r in results:
        value = getattr(r, metric)
        if r.round == last and value is not None:
            at.setdefault(r.strategy, {})[r.seed] = float(value)
    if baseline not in at:
        return []
    b = at[baseline]
    out: list[dict[str, Any]] = []
    for s, v in at.items():
        if s == baseline:
            continue
        seeds = sorted(set(v) & set(b))
        diffs = [v[k] - b[k] for k in seeds]
        if not diffs:
            continue
        mean = statistics.fmean(diffs)
        sd = ci95 = exceeds = None
        if len(diffs) > 1:
            sd = statistics.stdev(diffs)
            half = t975(len(diffs) - 1) * sd / math.sqrt(len(diffs))
            ci95 = [mean - half, mean + half]
            exceeds = ci95[0] > 0 or ci95[1] < 0
        out.append(
            dict(
                strategy=s,
                baseline=baseline,
                metric=metric,
                round=last,
                seeds=seeds,
                diffs=diffs,
                mean=mean,
                sd=sd,
                ci95=ci95,
                exceeds=exceeds,
            )
        )
    return out


def verdict(results: list[RoundResult], metric: str = "mAP", baseline: str = BASELINE) -> list[str]:
    """One line per mining strategy at the last round (:func:`paired_gaps`): the mean of the
    paired per-seed differences to ``baseline``, their sample SD and 95 % t-interval, and "the gap
    exceeds the seed-to-seed noise" iff that interval excludes 0; with one seed, no verdict
    ("one seed: no spread to compare against"). Empty without the baseline."""
    out = []
    for g in paired_gaps(results, metric, baseline):
        head = f"{g['strategy']} - {baseline} at round {g['round']} ({METRICS[metric]}): "
        if g["exceeds"] is None:
            out.append(head + f"{g['mean']:+.4f}; one seed: no spread to compare against")
            continue
        lo, hi = g["ci95"]
        word = "exceeds" if g["exceeds"] else "does not exceed"
        out.append(
            head + f"mean paired difference {g['mean']:+.4f} over {len(g['diffs'])} seeds (sample SD "
            f"{g['sd']:.4f}), 95 % t-interval [{lo:+.4f}, {hi:+.4f}]: the gap {word} the seed-to-seed noise"
        )
    return out


def gaps_by_metric(results: list[RoundResult]) -> dict[str, list[dict[str, Any]]]:
    """:func:`paired_gaps` of every figure the results carry (:func:`metrics_of`)."""
    return {m: paired_gaps(results, m) for m in metrics_of(results)}


def write_json(results: list[RoundResult], out_dir: Path, meta: dict[str, Any], complete: bool) -> Path:
    """``loop.json`` (settings, every round, ``complete``, and ``gaps``: :func:`gaps_by_metric`),
    written atomically."""
    path = out_dir / "loop.json"
    doc = {"meta": meta, "complete": complete, "rounds": [asdict(r) for r in results]}
    doc["gaps"] = gaps_by_metric(results)
    atomic_write(path, json.dumps(doc, indent=2))
    return path


def read_json(out_dir: Path) -> tuple[dict[str, Any], list[RoundResult]]:
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


def plot(results: list[RoundResult], meta: dict[str, Any]) -> Any:
    """The loop's figure (a matplotlib Figure): one panel per figure the results carry (test
    mAP50 of the val-picked stage, test mAP50 of the last stage; val mAP50 alone without a test
    split) against labeled images per strategy, the mean over seeds with its min-max band, the
    harness baseline drawn dashed, y from 0, ticks at the labeled counts, the test / val sizes and
    seeds in the caption.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [m for m in metrics_of(results) if m != "mAP"] or ["mAP"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.4), dpi=120, squeeze=False)
    for ax, metric in zip(axes[0], panels, strict=False):
        ticks = set()
        for s in dict.fromkeys(r.strategy for r in results):
            pts = _series(results, s, metric)
            xs = [n for _, n, _ in pts]
            ticks.update(xs)
            mean = [statistics.fmean(v) for _, _, v in pts]
            baseline = s == BASELINE
            (line,) = ax.plot(
                xs, mean, marker="o", linestyle="--" if baseline else "-", label=f"{s} (baseline)" if baseline else s
            )
            if any(len(v) > 1 for _, _, v in pts):
                ax.fill_between(
                    xs, [min(v) for _, _, v in pts], [max(v) for _, _, v in pts], alpha=0.2, color=line.get_color()
                )
        ax.set_xticks(sorted(ticks))
        ax.set_ylim(bottom=0)
        ax.set_xlabel("labeled training images")
        ax.set_ylabel(METRICS[metric])
        ax.set_title(f"{meta.get('executor', '')} on {meta.get('dataset', '')}")
        ax.grid(True, alpha=0.3)
        ax.legend()
    seeds = sorted({r.seed for r in results})
    test = (
        f"test: {meta['test_images']} images (never trained on, never used to pick a stage); "
        if meta.get("test_images")
        else ""
    )
    caption = (
        test
        + f"val: {meta.get('val_images', '?')} images; top-{meta.get('topk', '?')} per round; "
        + (f"mean and min-max over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]}")
    )
    fig.text(0.5, 0.01, caption, ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def write_outputs(results: list[RoundResult], out_dir: Path, meta: dict[str, Any]) -> dict[str, Path]:
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
