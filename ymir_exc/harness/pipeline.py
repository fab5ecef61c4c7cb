"""One task end to end, as the platform does it: prepare -> run -> check and collect.

``ymir-exc run``, ``ymir-exc verify`` and ``ymir-exc loop`` all go through :func:`run_task`;
:func:`run` is the same as ``ymir-exc run`` from Python (exported as ``ymir_exc.harness.run``)::

    from ymir_exc.harness import RunOptions, run

    outcome = run("det-demo-tmi", ["training"], "trees", RunOptions(quiet=True, user_config={"epochs": 2}))
    print(outcome.ok, outcome.training.model_hash, outcome.training.mAP)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ymir_exc.harness import collect
from ymir_exc.harness.datasets import Dataset
from ymir_exc.harness.executors import LocalExecutor
from ymir_exc.harness.models import ModelStore
from ymir_exc.harness.options import RunOptions
from ymir_exc.harness.runtime import RunResult, container_argv, find_entry_point, run_container, run_local, shm_size_for
from ymir_exc.harness.workspace import (
    PreparedTask,
    PrepareOptions,
    changed_links,
    make_task_id,
    prepare,
    snapshot_links,
)
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

    def source_of(self, asset_path: str | Path) -> str | None:
        """The user's image an asset was made from: ``asset_path`` is a path (or file name) of
        an asset as the executor saw it (``/in/assets/ab/<sha1>.jpg``, a ``mining.ranked`` path,
        an ``infer.results`` key); images with identical bytes share one asset, and the first
        of them is returned. None: not an asset of this task.

        Example: ``[(outcome.source_of(p), score) for p, score in outcome.mining.ranked]``.
        """
        sources = self.prepared.stats.sources if self.prepared.stats else {}
        return sources.get(os.path.basename(str(asset_path)))


def run(
    executor: str | Path,
    tasks: str | Sequence[str],
    dataset: str | Path | Dataset | None = None,
    options: RunOptions | None = None,
    model: str | None = None,
    work_dir: str | Path | None = None,
) -> TaskOutcome:
    """``ymir-exc run`` from Python: resolve the executor, read the dataset, check the config,
    prepare the work dir, run the executor, check and collect its outputs.

    Args:
        executor: a bundled executor's name (``det-demo-tmi``), an executor folder or an image
            tag, as ``ymir-exc run EXECUTOR`` takes it (``options.runtime`` picks how it runs).
        tasks: ``training``, ``mining``, ``infer``, or mining + infer (one name or a sequence).
        dataset: as ``--dataset`` (a bundled sample's name, default ``trees``; a YMIR ``in/``
            folder, a VOC folder, a COCO .json, a YOLO data.yaml), or a loaded
            :class:`~ymir_exc.harness.datasets.Dataset`. Mining and infer run on the dataset's
            unlabeled images (every image when it has none; infer alone: every image).
        options: how to run (default ``RunOptions()``); ``options.user_config`` is checked
            against the executor's templates, as the CLI does without ``--allow-unknown-keys``.
        model: ``HASH[@STAGE]``, a unique prefix, or ``latest[@STAGE]`` (the newest package this
            executor produced, else the newest of any); required for mining and infer.
        work_dir: the work dir W (default ``./ymir-work/<task id>``); its ``out/`` must be empty.

    Returns:
        the :class:`TaskOutcome` that ``ymir-exc run`` prints: ``ok``, ``run`` (exit code,
        seconds, monitor.txt), ``training`` (``model_hash``, ``mAP``, stages), ``mining``
        (``ranked``), ``infer`` (counts), ``problems``. An executor that fails is an outcome
        with ``ok`` False, not an exception.

    Raises:
        ValueError: an unknown task or combination; FileNotFoundError: no such executor or
        dataset; ConfigFileError: an unknown config key or mining_algorithm; ModelError: no
        such model; YmirExcError: anything wrong in the data, named. KeyboardInterrupt: Ctrl-C
        (the executor was stopped first).
    """
    from ymir_exc.harness.datasets import load_dataset
    from ymir_exc.harness.executors import check_config_keys, resolve_executor

    options = options or RunOptions()
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise ValueError(f"tasks {names!r}: expected training, mining, infer or mining + infer")
    order = [t for t in TASKS if t in names]
    exe, runtime = resolve_executor(str(executor), options.runtime)
    options = replace(options, runtime=runtime)
    check_config_keys(dict(options.user_config), exe, allow_unknown=options.allow_unknown_keys)
    check_task_config(exe, order, options.user_config)
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(None if dataset is None else str(dataset))
    ds, _note = task_dataset(ds, order)
    model_ref, _own = resolve_model_ref(options.model_store(), model, exe.name)
    return run_task(exe, order, ds, options, work_dir=Path(work_dir) if work_dir else None, model_ref=model_ref)


def check_task_config(executor: LocalExecutor, tasks: Sequence[str], user_config: Mapping[str, Any]) -> None:
    """Refuse a mining task whose ``mining_algorithm`` (the user's, else the template's) the
    executor's manifest does not list.

    Raises:
        ConfigFileError: the unknown name, with the choices.
    """
    from ymir_exc.harness.executors import check_mining_algorithm

    if "mining" in tasks:
        algo = user_config.get("mining_algorithm", (executor.templates().get("mining") or {}).get("mining_algorithm"))
        if algo is not None:
            check_mining_algorithm(executor, [algo])


def task_dataset(ds: Dataset, tasks: Sequence[str], split: str | None = None) -> tuple[Dataset, str | None]:
    """The dataset a task prepares ``in/`` from: ``ds`` itself for training; for mining / infer,
    ``ds`` with the candidates of ``split`` (default ``all`` for infer alone, else
    ``unlabeled``; see :func:`~ymir_exc.harness.sources.select_candidates`).

    Returns:
        (the dataset, a note for the user or None).

    Raises:
        ValueError: a ``split`` with training, or an unknown split.
    """
    from ymir_exc.harness.sources import select_candidates

    if "training" in tasks:
        if split:
            raise ValueError("--split is for mining / infer (training uses the dataset's train and val splits)")
        return ds, None
    return select_candidates(ds, split or ("all" if list(tasks) == ["infer"] else "unlabeled"))


def resolve_model_ref(store: ModelStore, model: str | None, executor_name: str) -> tuple[str | None, bool]:
    """``latest[@STAGE]`` as the newest package ``executor_name`` produced (else the newest of
    any executor) -> ``HASH[@STAGE]``; any other ref (or None) as given.

    Returns:
        (the ref, whether it is the executor's own: False only when ``latest`` fell back to
        another executor's package).

    Raises:
        ModelError: ``latest`` with an empty store.
    """
    if model is None:
        return None, True
    ref, at, stage = model.partition("@")
    if ref != "latest":
        return model, True
    path, own = store.resolve_latest(executor_name)
    return path.name + at + stage, own


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
        _collect(outcome, executor.name, store, manifest_object_type(executor) if "training" in order else None)
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
        PrepareOptions(
            protocol_version=options.protocol_version,
            container=options.container,
            gpu_id=options.gpu_id,
            manifest_file=executor.manifest_file,
            assets=options.assets,
        ),
        user_config=dict(options.user_config),
        model=model,
        task_id=task_id,
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


def manifest_object_type(executor: LocalExecutor) -> int | None:
    """The ``object_type`` of the executor's manifest, or None when the manifest cannot be read
    or does not give an integer (``verify`` reports that)."""
    try:
        value = executor.manifest().get("object_type")
    except (RuntimeError, ValueError, OSError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _collect(outcome: TaskOutcome, executor_name: str, store: ModelStore, object_type: int | None = None) -> None:
    """Check monitor.txt and each task's outputs; store the model package of a training (with the
    manifest's ``object_type``)."""
    prepared = outcome.prepared
    assert outcome.run is not None
    env = collect.task_env(prepared.env, prepared.work_dir)  # not in/env.yaml: a local executor may change it
    outcome.problems += collect.check_monitor(env, prepared.task_id, outcome.run.exit_code)
    if "training" in prepared.tasks:
        outcome.training = collect.collect_training(env, prepared.config, executor_name, store, object_type)
        outcome.problems += outcome.training.problems
    if "mining" in prepared.tasks:
        outcome.mining = collect.check_mining(env)
        outcome.problems += outcome.mining.problems
    if "infer" in prepared.tasks:
        # counts only: predictions.json streams infer-result.json again (harness.predictions)
        outcome.infer = collect.check_infer(env, list(prepared.config["class_names"]))
        outcome.problems += outcome.infer.problems
