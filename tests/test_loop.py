"""ymir-exc loop with det-demo-tmi on the bundled sample, tiny settings."""

import json

import pytest

from ymir_exc.cli import main
from ymir_exc.harness.datasets import load_sample
from ymir_exc.harness.loop import split_initial

from conftest import REPO


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
    rc = main(["loop", str(REPO / "det-demo-tmi"), "--initial", "8", "--rounds", "2", "--topk", "5",
               "--mining-algorithm", "entropy", "--baseline", "random", "--seed", "1", "--out", str(out),
               "--config", str(cfg), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0, text
    data = json.loads((out / "loop.json").read_text())
    rounds = data["rounds"]
    assert [(r["strategy"], r["round"], r["labeled"]) for r in rounds] == [
        ("entropy", 0, 8), ("entropy", 1, 13), ("entropy", 2, 18), ("random", 0, 8), ("random", 1, 13), ("random", 2, 18)]
    # the same initial set and seed: round 0 is the same training for both strategies
    assert rounds[0]["mAP"] == rounds[3]["mAP"]
    # each round's model is a stored package
    for r in rounds:
        assert (out / "models" / r["model_hash"]).is_file()
    # mined selections are distinct images, never re-selected
    picked = rounds[0]["selected"] + rounds[1]["selected"]
    assert len(picked) == len(set(picked)) == 10
    assert "round  labeled     entropy      random" in text
    assert (out / "loop.png").stat().st_size > 1000


def test_plot_shows_mean_and_spread_with_random_as_the_baseline():
    from ymir_exc.harness.loop import RoundResult, plot

    rounds = [RoundResult(s, k, 8 + 5 * k, m, "h", 1.0, seed=seed)
              for seed, shift in ((0, 0.0), (1, 0.02))
              for s, base in (("entropy", 0.3), ("random", 0.2))
              for k, m in ((0, 0.1 + shift), (1, base + shift))]
    fig = plot(rounds, {"executor": "det-demo-tmi", "dataset": "trees", "val_images": 11, "topk": 5})
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0
    assert list(ax.get_xticks()) == [8, 13]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"entropy", "random (baseline)"}
    assert lines["random (baseline)"].get_linestyle() == "--" and lines["entropy"].get_linestyle() == "-"
    assert list(lines["entropy"].get_ydata()) == pytest.approx([0.11, 0.31])  # the mean of the two seeds
    assert len(ax.collections) == 2  # one min-max band per strategy
    caption = " ".join(t.get_text() for t in fig.texts)
    assert "val: 11 images" in caption and "seeds 0, 1" in caption
