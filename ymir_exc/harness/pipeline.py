"""One task end to end, as the platform does it: prepare -> run -> check and collect.

``ymir-exc run``, ``ymir-exc verify`` and ``ymir-exc loop`` all go through :func:`run_task`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ymir_exc.harness import collect
from ymir_exc.harness.datasets import Dataset
from ymir_exc.harness.executors import LocalExecutor
from ymir_exc.harness.models import ModelStore
from ymir_exc.harness.options import RunOptions
from ymir_exc.harness.runtime import RunResult, container_argv, find_entry_point, run_container, run_local, shm_size_for
from ymir_exc.harness.workspace import PreparedTask, changed_links, make_task_id, prepare, snapshot_links
from ymir_exc.settings import TASKS


@dataclass
class TaskOutcome:
    """Everything a task produced: the prepared work dir, the run, and each task's report."""

    prepared: PreparedTask
    argv: list[str]
    runtime: str
    run: RunResult | None = None
    training: collect.TrainingReport | None = None
    mining: collect.MiningReport | None = None
    infer: collect.InferReport | None = None
    model: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The executor succeeded and every output follows the contract."""
        return self.run is not None and self.run.ok and not self.problems


def run_task(
    executor: LocalExecutor,
    tasks: Sequence[str],
    ds: Dataset,
    options: RunOptions,
    *,
    work_dir: Path | None = None,
    model_ref: str | None = None,
    until: str = "collect",
    before_run: Callable[[PreparedTask], None] | None = None,
) -> TaskOutcome:
    """Prepare ``work_dir`` (default ``./ymir-work/<task id>``), run, then check and collect.

    Args:
        executor: from :func:`~ymir_exc.harness.executors.resolve_executor`.
        tasks: ``training``, ``mining``, ``infer`` or mining + infer (any order).
        options: how to run; ``options.runtime`` is the resolved runtime (``local``, ``docker``,
            ``podman``), ``options.model_location`` the store models are read from and
            written to. With the local runtime, hard-linked assets (``options.assets``) are
            checked after the run: a changed user file fails the task (listed in ``problems``).
        model_ref: ``HASH[@STAGE]``, a unique prefix or ``latest``; required for mining / infer.
        until: ``collect`` (default: prepare, run, check and collect the outputs), ``run``
            (prepare and run, check nothing), ``prepare`` (prepare and build the command, run
            nothing: a dry run).
        before_run: called with the prepared task just before the executor starts (verify uses it
            to break an input on purpose).

    Raises:
        ModelError, ConfigFileError, ValueError, FileExistsError: bad inputs, before anything runs.
        KeyboardInterrupt: Ctrl-C or SIGTERM during the run (the executor was stopped first).
    """
    if until not in UNTIL:
        raise ValueError(f"until {until!r}: expected one of {', '.join(UNTIL)}")
    order = [t for t in TASKS if t in tasks]
    task_id = make_task_id(order)
    work = Path(work_dir or Path("ymir-work") / task_id).resolve()
    out_dir = work / "out"
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty: choose a new --work-dir")
    store = options.model_store()
    outcome = _prepare(executor, order, ds, options, work, task_id, _unpack(store, model_ref, work))
    if until == "prepare":
        return outcome
    if before_run is not None:
        before_run(outcome.prepared)
    _execute(executor, outcome, options)
    if outcome.problems:  # the executor changed the user's files: nothing else is checked
        return outcome
    assert outcome.run is not None
    if outcome.run.interrupted:  # Ctrl-C: the executor is stopped and state 4 written; run, verify, loop end
        raise KeyboardInterrupt
    if outcome.run.ok and until == "collect":
        _collect(outcome, executor.name, store)
    return outcome


#: the values of :func:`run_task`'s ``until``
UNTIL = ("collect", "run", "prepare")


def _unpack(store: ModelStore, model_ref: str | None, work: Path) -> dict[str, Any] | None:
    """``model_ref`` (``HASH[@STAGE]``) unpacked into ``work/in/models``; None without one."""
    if not model_ref:
        return None
    ref, _, stage = model_ref.partition("@")
    return store.unpack(ref, work / "in" / "models", stage or None)


def _prepare(
    executor: LocalExecutor,
    order: list[str],
    ds: Dataset,
    options: RunOptions,
    work: Path,
    task_id: str,
    model: dict[str, Any] | None,
) -> TaskOutcome:
    """``work/in`` and ``work/out`` prepared, and the command that runs the executor."""
    prepared = prepare(
        work,
        ds,
        order,
        executor.templates(),
        user_config=dict(options.user_config),
        protocol_version=options.protocol_version,
        container=options.container,
        gpu_id=options.gpu_id,
        model=model,
        manifest_file=executor.manifest_file,
        task_id=task_id,
        assets=options.assets,
    )
    if options.container:
        shm_size = shm_size_for(prepared.config.get("shm_size"), prepared.config["gpu_count"])
        argv = container_argv(options, executor.ref, prepared.in_dir, prepared.out_dir, task_id, shm_size=shm_size)
    else:
        argv = find_entry_point(executor.folder)
    return TaskOutcome(prepared, argv, options.runtime, model=model)


def _execute(executor: LocalExecutor, outcome: TaskOutcome, options: RunOptions) -> None:
    """Run the prepared task: ``outcome.run`` set; a local run that changed the user's files
    through hard-linked assets adds a problem."""
    prepared = outcome.prepared
    label, show, task_id = " + ".join(prepared.tasks), options.show, prepared.task_id
    if options.container:
        outcome.run = run_container(
            outcome.argv, prepared.out_dir, label=label, timeout=options.timeout, show=show, task_id=task_id
        )
        return
    links = snapshot_links(prepared.stats.linked if prepared.stats else [])
    outcome.run = run_local(
        executor.folder,
        prepared.in_dir,
        prepared.out_dir,
        label=label,
        timeout=options.timeout,
        show=show,
        gpu_ids=options.gpu_id,
        task_id=task_id,
    )
    changed = changed_links(links)
    if changed:
        outcome.problems.append(
            f"the executor changed {len(changed)} of your dataset's files through the "
            f"hard links in in/assets (use --assets copy): "
            + ", ".join(changed[:20])
            + (" ..." if len(changed) > 20 else "")
        )


def _collect(outcome: TaskOutcome, executor_name: str, store: ModelStore) -> None:
    """Check monitor.txt and each task's outputs; store the model package of a training."""
    prepared = outcome.prepared
    assert outcome.run is not None
    env = collect.task_env(prepared.env, prepared.work_dir)  # not in/env.yaml: a local executor may change it
    outcome.problems += collect.check_monitor(env, prepared.task_id, outcome.run.exit_code)
    if "training" in prepared.tasks:
        outcome.training = collect.collect_training(env, prepared.config, executor_name, store)
        outcome.problems += outcome.training.problems
    if "mining" in prepared.tasks:
        outcome.mining = collect.check_mining(env)
        outcome.problems += outcome.mining.problems
    if "infer" in prepared.tasks:
        # counts only: predictions.json streams infer-result.json again (harness.predictions)
        outcome.infer = collect.check_infer(env, list(prepared.config["class_names"]))
        outcome.problems += outcome.infer.problems
