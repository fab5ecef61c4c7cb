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
from ymir_exc.harness.runtime import RunResult, container_argv, find_entry_point, run_container, run_local, shm_size_for
from ymir_exc.harness.workspace import (
    PreparedTask,
    PrepareOptions,
    changed_links,
    make_task_id,
    prepare,
    snapshot_links,
)


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
    runtime: str,
    tasks: Sequence[str],
    ds: Dataset,
    *,
    work_dir: Path | None,
    store: ModelStore,
    model_ref: str | None = None,
    user_config: dict[str, Any] | None = None,
    protocol_version: str = "1.1.0",
    gpu_id: str = "",
    timeout: float | None = None,
    show: bool = True,
    network_none: bool = False,
    user: str | None = None,
    dry_run: bool = False,
    collect_outputs: bool = True,
    before_run: Callable[[PreparedTask], None] | None = None,
    assets: str = "auto",
) -> TaskOutcome:
    """Prepare ``work_dir`` (default ``./ymir-work/<task id>``), run, then check and collect.

    Args:
        executor: from :func:`~ymir_exc.harness.executors.resolve_executor`.
        runtime: ``local``, ``docker`` or ``podman``.
        tasks: ``training``, ``mining``, ``infer`` or mining + infer.
        model_ref: ``HASH[@STAGE]``, a unique prefix or ``latest``; required for mining / infer.
        dry_run: prepare and build the command, run nothing.
        before_run: called with the prepared task just before the executor starts (verify uses it
            to break an input on purpose).
        assets: how assets get into ``in/``: ``auto`` (reflink, else hard link), ``link``, ``copy``,
            ``reflink``. With the local runtime, hard-linked assets are checked after the run: a
            changed user file fails the task (listed in ``problems``).

    Raises:
        ModelError, ConfigFileError, ValueError, FileExistsError: bad inputs, before anything runs.
    """
    order = [t for t in ("training", "mining", "infer") if t in tasks]
    task_id = make_task_id(order)
    work = Path(work_dir or Path("ymir-work") / task_id).resolve()
    out_dir = work / "out"
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty: choose a new --work-dir")
    model = None
    if model_ref:
        ref, _, stage = model_ref.partition("@")
        model = store.unpack(ref, work / "in" / "models", stage or None)
    container = runtime != "local"
    prepared = prepare(
        work,
        ds,
        order,
        executor.templates(),
        PrepareOptions(protocol_version, container, gpu_id, executor.manifest_file, assets),
        user_config=user_config,
        model=model,
        task_id=task_id,
    )
    if container:
        argv = container_argv(
            runtime,
            executor.ref,
            prepared.in_dir,
            prepared.out_dir,
            task_id,
            user=user,
            gpu_ids=gpu_id,
            network_none=network_none,
            shm_size=shm_size_for(prepared.config.get("shm_size"), prepared.config["gpu_count"]),
        )
    else:
        argv = find_entry_point(executor.folder)
    outcome = TaskOutcome(prepared, argv, runtime, model=model)
    if dry_run:
        return outcome
    if before_run is not None:
        before_run(prepared)
    label = " + ".join(order)
    if container:
        outcome.run = run_container(argv, prepared.out_dir, label=label, timeout=timeout, show=show, task_id=task_id)
    else:
        links = snapshot_links(prepared.stats.linked if prepared.stats else [])
        outcome.run = run_local(
            executor.folder,
            prepared.env_file,
            prepared.config_file,
            prepared.out_dir,
            label=label,
            timeout=timeout,
            show=show,
            gpu_ids=gpu_id,
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
            return outcome
    if outcome.run.interrupted:  # Ctrl-C: the executor is stopped and state 4 written; run, verify, loop end
        raise KeyboardInterrupt
    if not outcome.run.ok or not collect_outputs:
        return outcome
    env = collect.task_env(prepared.env, prepared.work_dir)  # not in/env.yaml: a local executor may change it
    outcome.problems += collect.check_monitor(env, task_id, outcome.run.exit_code)
    if "training" in order:
        outcome.training = collect.collect_training(env, prepared.config, executor.name, store)
        outcome.problems += outcome.training.problems
    if "mining" in order:
        outcome.mining = collect.check_mining(env)
        outcome.problems += outcome.mining.problems
    if "infer" in order:
        # counts only: predictions.json streams infer-result.json again (harness.predictions)
        outcome.infer = collect.check_infer(env, list(prepared.config["class_names"]))
        outcome.problems += outcome.infer.problems
    return outcome
