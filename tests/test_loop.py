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
        assert len(r0) == 2 and r0[0]["model_hash"] == r0[1]["model_hash"] and [r["shared"] for r in r0] == [True, True]
        assert sorted(p.name for p in (out / f"seed_{seed}").iterdir()) == ["random", "random-harness", "round_0"]
        assert not (out / f"seed_{seed}" / "random" / "round_0").exists()
        # the training seed follows --seed
        cfg = yaml.safe_load((out / f"seed_{seed}" / "round_0" / "train" / "in" / "config.yaml").read_text())
        assert cfg["seed"] == seed
        # and so does the seed of the executor's own random mining (its mining template's key)
        mine_cfg = yaml.safe_load((out / f"seed_{seed}" / "round_0" / "mine-random" / "in" / "config.yaml").read_text())
        assert mine_cfg["random_seed"] == seed and mine_cfg["mining_algorithm"] == "random"
        # the executor's own random mining ran as a mining task; the harness baseline did not mine
        assert (out / f"seed_{seed}" / "round_0" / "mine-random" / "out" / "result.tsv").is_file() or any(
            (out / f"seed_{seed}" / "round_0" / "mine-random" / "out").rglob("result.tsv")
        )
        assert not (out / f"seed_{seed}" / "round_0" / "mine-random-harness").exists()
    for r in rounds:
        assert r["test_best"] is not None and 0 <= r["test_best"] <= 1 and r["test_last"] is not None
        assert r["best_stage"] and r["last_stage"] == "epoch_2"
        assert not set(r["selected"]) & test  # the test images are never in the pool
    for caption in ("mAP50 on test, stage picked on val", "mAP50 on test, last stage"):
        assert f"{caption} (mean +- sample SD over 2 seeds):" in captured.out
    assert "over 2 seeds (sample SD" in captured.out and "95 % t-interval" in captured.out
    assert (
        "the gap exceeds the seed-to-seed noise" in captured.out or "does not exceed the seed-to-seed" in captured.out
    )
    (gap,) = data["gaps"]["test_best"]  # the verdict's figures, in loop.json
    assert gap["strategy"] == "random" and gap["seeds"] == [0, 1] and len(gap["ci95"]) == 2


# ------------------------------------------------------------------ the verdict and the table


def _rounds(per_seed: dict, strategies=("entropy", "random-harness")):
    """RoundResults of round 0 (shared) and round 1 from {seed: (entropy, random-harness)}."""
    from ymir_exc.harness.loop import RoundResult

    out = []
    for seed, values in per_seed.items():
        for s, v in zip(strategies, values, strict=True):
            out.append(RoundResult(s, 0, 8, 0.1, "h0", 1.0, seed=seed, shared=True))
            out.append(RoundResult(s, 1, 13, v, "h1", 1.0, seed=seed))
    return out


def test_one_seed_gives_no_exceeds_verdict():
    from ymir_exc.harness.loop import verdict

    (line,) = verdict(_rounds({0: (0.30, 0.25)}))
    assert (
        line == "entropy - random-harness at round 1 (mAP50 on val, best stage): +0.0500; "
        "one seed: no spread to compare against"
    )
    assert "exceed" not in line


def test_the_verdict_is_a_paired_t_interval_over_the_seeds():
    from ymir_exc.harness.loop import paired_gaps, verdict

    # differences 0.05, 0.03, 0.04: mean 0.04, sample SD 0.01, t(0.975, 2) = 4.303
    results = _rounds({0: (0.35, 0.30), 1: (0.23, 0.20), 2: (0.44, 0.40)})
    (g,) = paired_gaps(results)
    assert g["seeds"] == [0, 1, 2] and g["diffs"] == pytest.approx([0.05, 0.03, 0.04])
    assert g["mean"] == pytest.approx(0.04) and g["sd"] == pytest.approx(0.01)
    half = 4.303 * 0.01 / math.sqrt(3)
    assert g["ci95"] == pytest.approx([0.04 - half, 0.04 + half]) and g["exceeds"] is True
    (line,) = verdict(results)
    assert "mean paired difference +0.0400 over 3 seeds (sample SD 0.0100)" in line
    assert "95 % t-interval [+0.0152, +0.0648]: the gap exceeds the seed-to-seed noise" in line
    # a consistent lead the unpaired spreads would hide: every seed +0.01, the seeds 0.1 apart
    (g,) = paired_gaps(_rounds({0: (0.21, 0.20), 1: (0.31, 0.30), 2: (0.41, 0.40)}))
    assert g["exceeds"] is True
    # differences of both signs: the interval holds 0
    noisy = _rounds({0: (0.35, 0.30), 1: (0.20, 0.24), 2: (0.41, 0.40)})
    assert paired_gaps(noisy)[0]["exceeds"] is False
    assert verdict(noisy)[0].endswith("the gap does not exceed the seed-to-seed noise")


def test_t_table_matches_the_t_distribution():
    """T975 against the t distribution's CDF integrated numerically (Simpson's rule)."""
    from ymir_exc.harness.loop import T975, t975

    def cdf_upper(t: float, df: int, n: int = 20000) -> float:  # P(0 < T < t)
        c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
        f = [c * (1 + (t * i / n) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
        return t / n / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    assert len(T975) == 30
    for df in (1, 2, 3, 5, 10, 30):
        assert 0.5 + cdf_upper(t975(df), df) == pytest.approx(0.975, abs=2e-5), df
    assert t975(100) == T975[-1]
    with pytest.raises(ValueError):
        t975(0)


def test_the_table_shows_the_sample_standard_deviation():
    from ymir_exc.harness.loop import table

    text = table(_rounds({0: (0.35, 0.30), 1: (0.23, 0.20), 2: (0.44, 0.40)}))
    row = text.splitlines()[2].split()
    # entropy at round 1: 0.35, 0.23, 0.44: mean 0.34, stdev (n - 1) 0.1054 (pstdev would be 0.0860)
    assert row[:5] == ["1", "13", "0.3400", "+-", "0.1054"]


# ------------------------------------------------------------------ resume, splits, arguments


def test_a_resumed_loop_trains_on_the_images_in_the_order_an_uninterrupted_one_does(tmp_path):
    from ymir_exc.harness.executors import resolve_executor
    from ymir_exc.harness.loop import BASELINE, LoopPlan, run_loop
    from ymir_exc.harness.options import RunOptions

    executor, runtime = resolve_executor(str(REPO / "det-demo-tmi"), "local")
    plan = LoopPlan(initial=8, rounds=2, topk=5, strategies=[BASELINE], seeds=(3,))

    def loop(out, done=None):
        opts = RunOptions(runtime=runtime, quiet=True, user_config={"epochs": 1}, model_location=tmp_path / "models")
        return run_loop(executor, load_sample(), plan, opts, out_dir=out, log=lambda m: None, done=done)

    whole = loop(tmp_path / "whole")
    assert [r.shared for r in whole] == [True, False, False]
    resumed = loop(tmp_path / "resumed", done=whole[:2])  # stopped after round 1: round 2 runs again

    def train_index(out):
        lines = (out / BASELINE / "round_2" / "train" / "in" / "train-index.tsv").read_text().splitlines()
        return [line.split("\t")[0].rsplit("/", 1)[-1] for line in lines]

    assert len(train_index(tmp_path / "whole")) == 18
    assert train_index(tmp_path / "resumed") == train_index(tmp_path / "whole")
    assert resumed[2].mAP == whole[2].mAP  # the same training, so the same figures


def _in_dir_dataset(root, copy_to=None):
    """The sample as a YMIR ``in/`` folder (``ymir-exc sample``); ``copy_to`` ("train" or "val"):
    also the first training image's bytes and labels under the name ``copy.jpg`` in that split.
    Returns the path of ``in/``."""
    assert main(["sample", "trees", "--out", str(root)]) == 0
    in_dir = root / "in"
    if copy_to:
        img, ann = (in_dir / "train-index.tsv").read_text().splitlines()[0].split("\t")
        shutil.copy(in_dir / img.removeprefix("/in/"), in_dir / "assets" / "copy.jpg")
        with open(in_dir / f"{copy_to}-index.tsv", "a") as f:
            f.write(f"/in/assets/copy.jpg\t{ann}\n")
    return in_dir


def test_the_loop_refuses_an_image_in_train_and_val_that_run_would_merge(tmp_path, capsys):
    from ymir_exc.harness.datasets import load_dataset

    data = _in_dir_dataset(tmp_path / "d", copy_to="val")  # the first training image, in val too
    first = load_dataset(str(data)).train[0].image_path
    merged = load_dataset(str(data))  # elsewhere (run, verify): merged into one item, kept in train
    assert len(merged.train) == 43 and len(merged.val) == 11
    with pytest.raises(AnnotationError, match="in both train and val") as e:
        load_dataset(str(data), across_splits="error")
    assert f"{first} (train)" in str(e.value) and "copy.jpg (val)" in str(e.value)
    argv = ["loop", str(REPO / "det-demo-tmi"), "--dataset", str(data), "--initial", "4", "--rounds", "1"]
    rc = main(argv + ["--topk", "2", "--mining-algorithm", "entropy", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "copy.jpg (val)" in err and f"{first} (train)" in err
    assert not (tmp_path / "o").exists()


def test_copies_inside_one_split_still_merge_for_the_loop(tmp_path):
    from ymir_exc.harness.datasets import load_dataset

    loaded = load_dataset(str(_in_dir_dataset(tmp_path / "d", copy_to="train")), across_splits="error")
    assert len(loaded.train) == 43 and any("merged" in n for n in loaded.notes)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--topk", "0"], "argument --topk: '0': must be at least 1"),
        (["--topk", "-3"], "argument --topk: '-3': must be at least 1"),
        (["--rounds", "-1"], "argument --rounds: '-1': must be at least 1"),
        (["--seed", "1", "--seeds", "0,1"], "--seed and --seeds together"),
        (["--mining-algorithm", "random-harness"], "--baseline random-harness"),
        (["--test-split", "1.0"], "fraction in (0, 1)"),
        (["--test-split", "2.5"], "fraction in (0, 1)"),
        (["--test-split", "0"], "integer >= 1"),
    ],
)
def test_nonsense_loop_arguments_exit_2_before_anything_runs(tmp_path, capsys, extra, message):
    base = {"--initial": "8", "--rounds": "1", "--topk": "5", "--mining-algorithm": "entropy"}
    for k in extra[::2]:
        base.pop(k, None)
    argv = ["loop", str(REPO / "det-demo-tmi"), "--out", str(tmp_path / "o"), "--quiet"]
    argv += [x for kv in base.items() for x in kv] + extra
    if "argument" in message:  # argparse's own error
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    else:
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "o").exists()


def test_parse_test_split_counts_and_fractions():
    from ymir_exc.harness.loop import parse_test_split

    assert parse_test_split("12") == 12 and isinstance(parse_test_split("12"), int)
    assert parse_test_split("1") == 1 and parse_test_split("0.2") == 0.2
    for bad in ("1.0", "2.0", "0.0", "-3", "nan", "inf", "x", "1e0"):
        with pytest.raises(ValueError, match="--test-split"):
            parse_test_split(bad)


def test_a_test_set_under_5_images_is_warned_about(tmp_path, capsys):
    argv = ["loop", str(REPO / "det-demo-tmi"), "--initial", "60", "--rounds", "1", "--topk", "5"]
    rc = main(argv + ["--mining-algorithm", "entropy", "--test-split", "3", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--initial must be between 1 and" in err  # stopped before training anything
    assert "warning: --test-split 3 holds out 3 image(s)" in err
