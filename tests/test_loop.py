"""ymir-exc loop with det-demo-tmi on the bundled sample, tiny settings."""

import json
import math
import random
import shutil
from collections import Counter

import pytest
import yaml
from conftest import REPO

from ymir_exc.cli import main
from ymir_exc.errors import AnnotationError
from ymir_exc.harness.datasets import Dataset, Item, load_sample
from ymir_exc.harness.loop import baseline_pick, check_disjoint, split_initial, split_test


def test_initial_split_is_seeded_and_disjoint():
    ds = load_sample()
    a1, p1 = split_initial(ds, 10, seed=3)
    a2, p2 = split_initial(ds, 10, seed=3)
    assert [i.image_path for i in a1] == [i.image_path for i in a2]
    assert len(a1) == 10 and len(p1) == len(ds.train) - 10
    assert not {i.image_path for i in a1} & {i.image_path for i in p1}


def test_loop_runs_mining_and_random_rounds_and_writes_figures(tmp_path, capsys):
    out = tmp_path / "loop"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("epochs: 2\n")
    rc = main(
        [
            "loop",
            str(REPO / "det-demo-tmi"),
            "--initial",
            "8",
            "--rounds",
            "2",
            "--topk",
            "5",
            "--mining-algorithm",
            "entropy",
            "--baseline",
            "random-harness",
            "--seed",
            "1",
            "--out",
            str(out),
            "--config",
            str(cfg),
            "--quiet",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    data = json.loads((out / "loop.json").read_text())
    rounds = data["rounds"]
    assert [(r["strategy"], r["round"], r["labeled"]) for r in rounds] == [
        ("entropy", 0, 8),
        ("entropy", 1, 13),
        ("entropy", 2, 18),
        ("random-harness", 0, 8),
        ("random-harness", 1, 13),
        ("random-harness", 2, 18),
    ]
    # the same initial set and seed: round 0 is the same training for both strategies
    assert rounds[0]["mAP"] == rounds[3]["mAP"]
    # each round's model is a stored package
    for r in rounds:
        assert (out / "models" / r["model_hash"]).is_file()
    # mined selections are distinct images, never re-selected
    picked = rounds[0]["selected"] + rounds[1]["selected"]
    assert len(picked) == len(set(picked)) == 10
    header = next(line for line in text.splitlines() if line.startswith("round  labeled"))
    assert header.split() == ["round", "labeled", "entropy", "random-harness"]
    assert (out / "loop.png").stat().st_size > 1000


def test_plot_shows_mean_and_spread_with_random_as_the_baseline():
    from ymir_exc.harness.loop import RoundResult, plot

    rounds = [
        RoundResult(s, k, 8 + 5 * k, m, "h", 1.0, seed=seed)
        for seed, shift in ((0, 0.0), (1, 0.02))
        for s, base in (("entropy", 0.3), ("random-harness", 0.2))
        for k, m in ((0, 0.1 + shift), (1, base + shift))
    ]
    fig = plot(rounds, {"executor": "det-demo-tmi", "dataset": "trees", "val_images": 11, "topk": 5})
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0
    assert list(ax.get_xticks()) == [8, 13]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"entropy", "random-harness (baseline)"}
    assert lines["random-harness (baseline)"].get_linestyle() == "--" and lines["entropy"].get_linestyle() == "-"
    assert list(lines["entropy"].get_ydata()) == pytest.approx([0.11, 0.31])  # the mean of the two seeds
    assert len(ax.collections) == 2  # one min-max band per strategy
    caption = " ".join(t.get_text() for t in fig.texts)
    assert "val: 11 images" in caption and "seeds 0, 1" in caption


def _chi2_999(dof: int) -> float:
    """The 0.999 quantile of chi-square with ``dof`` degrees of freedom (Wilson-Hilferty, z = 3.0902)."""
    return dof * (1 - 2 / (9 * dof) + 3.0902 * math.sqrt(2 / (9 * dof))) ** 3


def _pick_chi2(picker, seeds: int = 10000, initial: int = 10, topk: int = 5) -> tuple:
    """(chi-square, dof) of how often each image is picked, given it is in the pool: under a
    uniform picker each image's count is binomial(times in the pool, topk / pool size)."""
    ds = load_sample()
    picked, in_pool = Counter(), Counter()
    for s in range(seeds):
        _, pool = split_initial(ds, initial, s)
        in_pool.update(i.image_path for i in pool)
        picked.update(i.image_path for i in picker(pool, topk, s))
    p = topk / (len(ds.train) - initial)
    chi2 = sum((picked[k] - n * p) ** 2 / (n * p * (1 - p)) for k, n in in_pool.items())
    return chi2, len(in_pool) - 1


def test_baseline_picks_are_uniform_over_seeds_within_chi_square_tolerance():
    """Tolerance: the picks' chi-square over 10,000 seeds stays below its 0.999 quantile (a
    uniform picker fails this 1 time in 1000); a picker 3 % biased towards some images fails it."""
    chi2, dof = _pick_chi2(lambda pool, k, s: baseline_pick(pool, k, s, 0))
    assert chi2 < _chi2_999(dof), (chi2, dof)

    def biased(pool, k, s):  # 3 % of the draws take the first k images by name
        if random.Random(f"bias:{s}").random() < 0.03:
            return sorted(pool, key=lambda i: i.image_path)[:k]
        return baseline_pick(pool, k, s, 0)

    chi2_b, _ = _pick_chi2(biased)
    assert chi2_b > _chi2_999(dof), chi2_b


def test_baseline_stream_is_its_own_and_ignores_the_pool_order():
    ds = load_sample()
    _, pool = split_initial(ds, 10, 7)
    a = baseline_pick(pool, 5, 7, 1)
    assert [i.image_path for i in baseline_pick(list(reversed(pool)), 5, 7, 1)] == [i.image_path for i in a]
    assert [i.image_path for i in baseline_pick(pool, 5, 7, 2)] != [i.image_path for i in a]  # one per round


def test_test_split_is_fixed_and_disjoint_from_train():
    ds = load_sample()
    rest, test = split_test(ds, 12)
    rest2, test2 = split_test(ds, 12 / len(ds.train))
    assert len(test) == 12 and [i.image_path for i in test] == [i.image_path for i in test2]
    assert len(rest.train) == len(ds.train) - 12 and rest.val == ds.val
    assert not {i.image_path for i in test} & {i.image_path for i in rest.train}
    with pytest.raises(ValueError, match="test-split"):
        split_test(ds, len(ds.train))


def test_a_train_test_overlap_is_refused_naming_the_files(tmp_path):
    ds = load_sample()
    copy = tmp_path / "renamed.jpg"
    shutil.copyfile(ds.train[0].image_path, copy)  # the same bytes under another name
    with pytest.raises(AnnotationError, match="renamed.jpg") as e:
        check_disjoint({"train": ds.train, "val": ds.val, "test": [Item(str(copy), list(ds.train[0].boxes))]})
    assert ds.train[0].image_path in str(e.value) and "(test)" in str(e.value) and "(train)" in str(e.value)
    check_disjoint({"train": ds.train[1:], "test": [Item(str(copy))]})  # no overlap: no error


def test_loop_refuses_a_dataset_whose_splits_overlap_before_training(tmp_path):
    from ymir_exc.harness.executors import resolve_executor
    from ymir_exc.harness.loop import LoopPlan, run_loop
    from ymir_exc.harness.options import RunOptions

    ds = load_sample()
    copy = tmp_path / "val-copy.jpg"
    shutil.copyfile(ds.train[3].image_path, copy)
    bad = Dataset("overlap", ds.class_names, ds.train, ds.val + [Item(str(copy), list(ds.train[3].boxes))], [])
    executor, runtime = resolve_executor(str(REPO / "det-demo-tmi"), "local")
    with pytest.raises(AnnotationError, match="val-copy.jpg"):
        run_loop(
            executor,
            bad,
            LoopPlan(initial=8, rounds=1, topk=5, strategies=["entropy"]),
            RunOptions(runtime=runtime, model_location=tmp_path / "models"),
            out_dir=tmp_path / "o",
            log=lambda m: None,
        )
    assert not (tmp_path / "o").exists()  # nothing was trained


def test_loop_test_split_shared_round_0_training_seed_and_the_executors_random(tmp_path, capsys):
    out = tmp_path / "lp"
    rc = main(
        [
            "loop",
            str(REPO / "det-demo-tmi"),
            "--initial",
            "8",
            "--rounds",
            "1",
            "--topk",
            "5",
            "--mining-algorithm",
            "random",
            "--baseline",
            "random",
            "--seeds",
            "0,1",
            "--test-split",
            "12",
            "--set",
            "epochs=2",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "--baseline random is deprecated" in captured.err
    data = json.loads((out / "loop.json").read_text())
    rounds = data["rounds"]
    assert data["meta"]["test_images"] == 12 and data["meta"]["strategies"] == ["random", "random-harness"]
    test = {i.image_path for i in split_test(load_sample(), 12)[1]}
    for seed in (0, 1):
        r0 = [r for r in rounds if r["seed"] == seed and r["round"] == 0]
        # round 0: one training per seed, reported under both strategies
        assert (
            len(r0) == 2 and r0[0]["model_hash"] == r0[1]["model_hash"] and [r["shared"] for r in r0] == [False, True]
        )
        assert sorted(p.name for p in (out / f"seed_{seed}").iterdir()) == ["random", "random-harness", "round_0"]
        assert not (out / f"seed_{seed}" / "random" / "round_0").exists()
        # the training seed follows --seed
        cfg = yaml.safe_load((out / f"seed_{seed}" / "round_0" / "train" / "in" / "config.yaml").read_text())
        assert cfg["seed"] == seed
        # the executor's own random mining ran as a mining task; the harness baseline did not mine
        assert (out / f"seed_{seed}" / "round_0" / "mine-random" / "out" / "result.tsv").is_file() or any(
            (out / f"seed_{seed}" / "round_0" / "mine-random" / "out").rglob("result.tsv")
        )
        assert not (out / f"seed_{seed}" / "round_0" / "mine-random-harness").exists()
    for r in rounds:
        assert r["test_best"] is not None and 0 <= r["test_best"] <= 1 and r["test_last"] is not None
        assert r["best_stage"] and r["last_stage"] == "epoch_2"
        assert not set(r["selected"]) & test  # the test images are never in the pool
    assert "mAP50 on test, stage picked on val:" in captured.out and "mAP50 on test, last stage:" in captured.out
    assert "which exceeds the spread" in captured.out or "which does not exceed the spread" in captured.out
