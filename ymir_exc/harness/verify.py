"""``ymir-exc verify``: run an executor through every task on a dataset and check each rule of
the contract (docs/contract.md#what-an-executor-must-write and #the-image). Also ``inspect``'s
reading of img-man.

Scenarios: training, mining, infer, mining + infer (with the model the training produced), and
a crash case (an invalid config.yaml: broken YAML, written on purpose) that must end in state 4,
written by the executor itself, and a non-zero exit. Checks per scenario: exit code, monitor.txt
format (the file after the executor exited; a read mid-write while it runs is retried) /
monotonic progress / final state, and the outputs (result.yaml schema, stage files, metrics,
best stage, at most 11 stages, tensorboard logs (a warning when absent: the platform does not
require them), reproducible model package; result.tsv one sorted line per candidate;
infer-result.json one key per candidate with valid boxes). With the manifest's object_type, the
stages' primary metric and the infer-result.json format must be that type's.
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from ymir_exc.code import ExecutorState
from ymir_exc.formats.monitor import MonitorState
from ymir_exc.harness.collect import TrainingReport, collect_training, task_env
from ymir_exc.harness.datasets import Dataset
from ymir_exc.harness.executors import TEMPLATE_FILES, LocalExecutor
from ymir_exc.harness.models import OBJECT_TYPE_METRIC, ModelStore
from ymir_exc.harness.options import RunOptions
from ymir_exc.harness.pipeline import TaskOutcome, manifest_object_type, run_task
from ymir_exc.harness.runtime import RunResult
from ymir_exc.harness.workspace import RESERVED_KEYS, PreparedTask

OBJECT_TYPES = {2: "detection", 3: "semantic segmentation", 4: "instance segmentation"}


@dataclass
class Check:
    """One check of one scenario. An ``advisory`` check that does not hold is a warning: it is
    reported (status ``WARN``) but does not fail ``verify``."""

    scenario: str
    name: str
    ok: bool
    detail: str = ""
    advisory: bool = False

    @property
    def status(self) -> str:
        """``PASS``, ``WARN`` (an advisory check that does not hold) or ``FAIL``."""
        return "PASS" if self.ok else "WARN" if self.advisory else "FAIL"

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


def check_img_man(executor: LocalExecutor) -> list[Check]:
    """img-man files present, pure YAML, object_type known, templates free of reserved keys."""
    out: list[Check] = []
    for fname in ["manifest.yaml"] + list(TEMPLATE_FILES.values()):
        try:
            text = executor.read_text(fname)
        except RuntimeError as e:
            out.append(Check("img-man", f"{fname} readable", False, str(e)))
            continue
        if text is None:
            out.append(Check("img-man", f"{fname} present", False, "missing"))
            continue
        try:
            data = executor.read_yaml(fname)
        except ValueError as e:
            out.append(Check("img-man", f"{fname} is pure YAML", False, str(e)))
            continue
        out.append(Check("img-man", f"{fname} is pure YAML", True, f"{len(data)} keys"))
        if fname == "manifest.yaml":
            ot = data.get("object_type")
            ot_name = (OBJECT_TYPES.get(ot) if isinstance(ot, int) else None) or "unknown: expected 2, 3 or 4"
            out.append(
                Check(
                    "img-man",
                    "manifest object_type",
                    ot in OBJECT_TYPES,
                    f"{ot} ({ot_name})",
                )
            )
        else:
            bad = [k for k in RESERVED_KEYS if k in data]
            out.append(Check("img-man", f"{fname} sets no reserved key", not bad, f"sets {bad}" if bad else "ok"))
    return out


def check_run(scenario: str, outcome: TaskOutcome, expect_success: bool = True) -> list[Check]:
    """Exit code and monitor.txt rules for one run: with ``expect_success``, exit 0, a parsable
    monitor.txt ending at 1.00 with the task's id, progress never going backwards; without it
    (the crash scenario), a non-zero exit and monitor.txt in state 4 with an error return code."""
    r = outcome.run
    assert r is not None
    if not expect_success:
        return _check_crash(scenario, r)
    detail = f"exit code {r.exit_code}" + (" (timed out)" if r.timed_out else "")
    if not r.ok:
        detail += "; " + " | ".join(r.log_tail(2).splitlines())
    mon = r.monitor
    out = [
        Check(scenario, "exit code 0", r.ok, detail),
        Check(
            scenario,
            "monitor.txt format",
            mon is not None and not r.monitor_errors,
            "; ".join(r.monitor_errors[:2]) or ("ok" if mon else "missing or unparsable"),
        ),
    ]
    if mon is not None:
        out += _check_final_monitor(scenario, mon, r.exit_code, outcome.prepared.task_id)
    backwards = [(a, b) for a, b in itertools.pairwise(r.percents) if b < a]
    out.append(
        Check(
            scenario,
            "progress never goes backwards",
            not backwards,
            f"{len(r.percents)} readings" + (f"; {backwards[0][0]:.2f} -> {backwards[0][1]:.2f}" if backwards else ""),
        )
    )
    return out


def _check_crash(scenario: str, r: RunResult) -> list[Check]:
    """A run that had to fail: a non-zero exit, monitor.txt in state 4 written by the executor
    itself (not the harness's fallback line), an error return code."""
    mon = r.monitor
    in_state_4 = mon is not None and mon.state == ExecutorState.ES_ERROR
    if mon is None:
        detail = "no parsable monitor.txt"
    elif in_state_4 and r.error_state_by_harness:
        detail = "state 4 was written by the harness, not the executor: " + (mon.message.splitlines() or [""])[0]
    else:
        detail = f"state {mon.state}, return code {mon.return_code}"
    return [
        Check(scenario, "non-zero exit", r.exit_code != 0, f"exit code {r.exit_code}"),
        Check(
            scenario,
            "monitor.txt ends in state 4",
            in_state_4 and not r.error_state_by_harness,
            detail,
        ),
        Check(
            scenario,
            "error return code set",
            mon is not None and mon.return_code != 0,
            f"{mon.return_code}" if mon else "-",
        ),
    ]


def _check_final_monitor(scenario: str, mon: MonitorState, exit_code: int, task_id: str) -> list[Check]:
    """The last monitor.txt of a successful run: percent 1.00 and done, and the task's id."""
    # upstream executors end with percent 1.0 in the running state; the platform marks a
    # task that then exits 0 as done
    done = mon.state == ExecutorState.ES_DONE or (mon.state == ExecutorState.ES_RUNNING and exit_code == 0)
    return [
        Check(
            scenario,
            "monitor.txt ends at 1.00 (done, or running and exit 0)",
            mon.percent == 1.0 and done,
            f"state {mon.state}, percent {mon.percent:.2f}, return code {mon.return_code}",
        ),
        Check(scenario, "monitor.txt task_id", mon.task_id == task_id, f"{mon.task_id!r} vs {task_id!r}"),
    ]


def check_outputs(scenario: str, outcome: TaskOutcome, object_type: int | None = None) -> list[Check]:
    """The output files' checks: result.yaml, tensorboard logs (advisory) and a reproducible
    model package for a training; result.tsv for mining; infer-result.json for infer.

    With the manifest's ``object_type`` (2, 3 or 4), also: every stage carries that type's
    primary metric (``mAP``, ``mIoU``, ``maskAP``) and infer-result.json is in that type's
    format (detection for 2, COCO-style segmentation for 3 and 4)."""
    out: list[Check] = []
    if outcome.training is not None:
        out += _check_training(scenario, outcome.training, outcome.prepared)
        if object_type in OBJECT_TYPE_METRIC and not outcome.training.problems:
            out.append(_check_stage_metrics(scenario, outcome.training, object_type))
    if outcome.mining is not None:
        m = outcome.mining
        out.append(
            Check(
                scenario,
                "result.tsv: one sorted line per candidate",
                not m.problems,
                "; ".join(m.problems[:3]) or f"{len(m.ranked)} lines",
            )
        )
    if outcome.infer is not None:
        i = outcome.infer
        out.append(
            Check(
                scenario,
                "infer-result.json: one key per candidate, valid boxes",
                not i.problems,
                "; ".join(i.problems[:3]) or f"{i.images} images, {i.boxes} boxes",
            )
        )
        if object_type in OBJECT_TYPE_METRIC and i.format:
            want = "detection" if object_type == 2 else "segmentation"
            out.append(
                Check(
                    scenario,
                    "infer-result.json format follows object_type",
                    i.format == want,
                    f"object_type {object_type} ({OBJECT_TYPES[object_type]}) expects a {want} result, "
                    f"found a {i.format} result",
                )
            )
    return out


def _check_stage_metrics(scenario: str, rep: TrainingReport, object_type: int) -> Check:
    """Every stage of result.yaml carries the primary metric of the manifest's ``object_type``."""
    key = OBJECT_TYPE_METRIC[object_type]
    lacking = {name: sorted(st.evaluation_result()) for name, st in rep.stages.items()}
    lacking = {name: keys for name, keys in lacking.items() if key not in keys}
    if lacking:
        name, keys = next(iter(lacking.items()))
        detail = (
            f"object_type {object_type} ({OBJECT_TYPES[object_type]}) expects {key}; "
            f"{len(lacking)} stage(s) lack it, e.g. {name!r} reports {', '.join(keys) or 'no metric'}"
        )
    else:
        detail = f"{key} in {len(rep.stages)} stage(s)"
    return Check(scenario, "stage metrics follow object_type", not lacking, detail)


def _check_training(scenario: str, rep: TrainingReport, prepared: PreparedTask) -> list[Check]:
    out = [
        Check(
            scenario,
            "result.yaml follows the contract",
            not rep.problems,
            "; ".join(rep.problems[:3])
            or f"{len(rep.stages)} stage(s), best {rep.best_stage_name} {rep.metric_key} {rep.mAP:.4f}",
        )
    ]
    tb = prepared.out_dir / "tensorboard"
    files = [p for p in tb.rglob("*") if p.is_file()] if tb.is_dir() else []
    # the platform shows them when present but does not require them: a warning, not a failure
    out.append(
        Check(
            scenario,
            "tensorboard logs present",
            bool(files),
            f"{len(files)} file(s) in {tb}"
            + ("" if files else " (optional: the platform's TensorBoard page stays empty)"),
            advisory=True,
        )
    )
    if not rep.problems:
        env = task_env(prepared.env, prepared.work_dir)
        # pack the same outputs twice into two stores: the hashes must agree
        with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2:
            h1 = collect_training(env, prepared.config, "verify", ModelStore(t1)).model_hash
            h2 = collect_training(env, prepared.config, "verify", ModelStore(t2)).model_hash
        out.append(
            Check(
                scenario,
                "model package is reproducible",
                h1 is not None and h1 == h2,
                f"{h1[:12] if h1 else '-'} twice",
            )
        )
    return out


def verify(
    executor: LocalExecutor,
    ds: Dataset,
    options: RunOptions,
    *,
    work_root: Path | None = None,
    crash: bool = True,
) -> list[Check]:
    """Run every scenario and return the list of checks (see the module docstring).

    Args:
        options: how to run (``options.runtime`` resolved); the model store defaults to
            ``work_root/models`` when ``options.model_location`` is None.
        work_root: where each scenario's work dir goes (default: a new temp dir, kept).
        crash: also run the crash scenario.

    A scenario whose task cannot be prepared is a failed ``task prepared`` check, not an error.
    """
    root = Path(work_root or tempfile.mkdtemp(prefix="ymir-exc-verify-")).resolve()
    if options.model_location is None:
        options = replace(options, model_location=root / "models")
    checks = check_img_man(executor)
    object_type = manifest_object_type(executor)

    def scenario(name: str, tasks: list[str], model: str | None = None) -> TaskOutcome | None:
        try:
            outcome = run_task(executor, tasks, ds, options, work_dir=root / name.replace(" ", ""), model_ref=model)
        except Exception as e:
            checks.append(Check(name, "task prepared", False, f"{type(e).__name__}: {e}"))
            return None
        checks.extend(check_run(name, outcome))
        checks.extend(check_outputs(name, outcome, object_type))
        return outcome

    trained = scenario("training", ["training"])
    model = trained.training.model_hash if trained and trained.training else None
    if model is None:
        checks.append(Check("mining/infer", "a model to mine and infer with", False, "training produced no package"))
    else:
        scenario("mining", ["mining"], model)
        scenario("infer", ["infer"], model)
        scenario("mining + infer", ["mining", "infer"], model)
    if crash:
        checks += _crash_scenario(executor, ds, options, root / "crash")
    return checks


def _crash_scenario(executor: LocalExecutor, ds: Dataset, options: RunOptions, work: Path) -> list[Check]:
    """A training whose config.yaml is replaced by an invalid one (broken YAML) just before the
    run: it must fail cleanly, writing state 4 itself."""
    name = "crash (invalid config.yaml)"

    def break_config(prepared: PreparedTask) -> None:
        prepared.config_file.write_text("class_names: [unclosed\n", encoding="utf-8")

    try:
        outcome = run_task(executor, ["training"], ds, options, work_dir=work, until="run", before_run=break_config)
    except Exception as e:
        return [Check(name, "task prepared", False, f"{type(e).__name__}: {e}")]
    return check_run(name, outcome, expect_success=False)
