"""Our typed entry for new executors: one object with the task's paths, config and writers.

Example (a whole executor)::

    from ymir_exc import Detection, Executor, Task

    def train(task: Task) -> None:
        for item in task.items("train"):              # DatasetItem: image_path, boxes (BBox, pixels)
            ...
        task.progress(0.5)
        task.save_stage("epoch_10", ["best.pt"], mAP=0.61, mAR=0.7)

    def infer(task: Task) -> None:
        task.save_infer({item.image_path: [Detection("tree", 0.9, x=10, y=20, w=30, h=40)]
                         for item in task.items("candidate")})

    Executor(training=train, infer=infer).main()

:class:`~ymir_exc.executor.Executor` hands each function its ``Task``; outside it,
``Task.current()`` reads the same files.

Everything here calls the upstream-compatible functions (``dataset_reader``, ``result_writer``,
``monitor``, ``util``), so both APIs write the same files with the same validation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ymir_exc import dataset_reader, env, monitor, result_writer, util
from ymir_exc.dataset_reader import DatasetItem
from ymir_exc.env import DatasetType


@dataclass(frozen=True)
class Detection:
    """One predicted box: class name (one of class_names), score in [0, 1], integer pixels.

    Example::

        >>> Detection("tree", 0.9, x=10, y=20, w=30, h=40).to_annotation().box.w
        30
    """

    class_name: str
    score: float
    x: int
    y: int
    w: int
    h: int

    def to_annotation(self) -> result_writer.Annotation:
        """The same box as the upstream :class:`ymir_exc.result_writer.Annotation`."""
        return result_writer.Annotation(
            class_name=self.class_name, score=self.score, box=result_writer.Box(x=self.x, y=self.y, w=self.w, h=self.h)
        )


@dataclass
class Task:
    """The current task: env.yaml (``env``) and the merged config (``param``).

    Attributes:
        env: the parsed env.yaml (paths under ``env.input`` / ``env.output``).
        param: config.yaml as a dict (template values + reserved keys).
        running: the task this object was handed to by :class:`~ymir_exc.executor.Executor`
            (``"training"``, ``"mining"`` or ``"infer"``); None from :meth:`current`.

    Example::

        task = Task.current()                          # or the one Executor passes in
        epochs = int(task.param.get("epochs", 10))     # a hyper-parameter of config.yaml
        for item in task.items("train"):               # image_path, boxes
            print(item.image_path, [(b.class_name, b.x, b.y, b.w, b.h) for b in item.boxes])
        task.progress(0.5)
    """

    env: env.EnvConfig
    param: dict[str, Any]
    running: str | None = None

    @classmethod
    def current(cls) -> Task:
        """Read env.yaml and config.yaml (see :mod:`ymir_exc.settings`).

        Raises:
            EnvFileError, ConfigFileError: naming the file, line and key.
        """
        cfg = util.get_merged_config()
        return cls(cfg.ymir, dict(cfg.param))

    @property
    def merged_config(self) -> Any:
        """The upstream-style EasyDict (``.param``, ``.ymir``)."""
        from easydict import EasyDict

        m = EasyDict()
        m.param = self.param
        m.ymir = self.env
        return m

    @property
    def class_names(self) -> list[str]:
        """The reserved key ``class_names`` (the classes to train or detect, in order)."""
        return list(self.param.get("class_names") or [])

    @property
    def tasks(self) -> list[str]:
        """The tasks env.yaml enables, in the platform's order."""
        return [
            t
            for t, on in (
                ("training", self.env.run_training),
                ("mining", self.env.run_mining),
                ("infer", self.env.run_infer),
            )
            if on
        ]

    @property
    def gpu_ids(self) -> list[int]:
        """GPU ids inside the container (``gpu_id`` renumbered 0..n-1); empty for CPU."""
        return [int(g) for g in str(self.param.get("gpu_id") or "").split(",") if g.strip()]

    def items(self, split: str | DatasetType) -> Iterator[DatasetItem]:
        """Typed items of ``train``, ``val`` or ``candidate`` (boxes parsed for train / val)."""
        return dataset_reader.read_items(split, self.merged_config)

    def count(self, split: str | DatasetType) -> int:
        """Number of images of a split."""
        return dataset_reader.items_count(split, self.env)

    def weights(self, suffix: str | tuple[str, ...] = (".pt", ".pth")) -> list[str]:
        """Weight files handed in (``pretrained_model_params`` / ``model_params_path``)."""
        return util.get_weight_files(self.merged_config, suffix)

    def progress(self, percent: float, task: str | None = None) -> None:
        """Report ``percent`` (0-1) of ``task`` (default: the task running, else the first
        enabled one) in monitor.txt; with several tasks in one run (mining + infer) each gets
        its share of [0, 1], so the reading never goes backwards."""
        task = task or self.running or self.tasks[0]
        monitor.write_monitor_logger_for_multiple_tasks(self.merged_config, task, percent)

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        """Add scalars (``{"train/loss": 0.3, "val/mAP50": 0.5}``) at ``step`` (an epoch, an
        iteration) to the TensorBoard log in ``env.output.tensorboard_dir``."""
        monitor.write_tensorboard_scalars(dict(scalars), step)

    def save_stage(
        self,
        stage_name: str,
        files: Sequence[str],
        mAP: float | None = None,
        timestamp: int | None = None,
        attachments: dict[str, list[str]] | None = None,
        evaluate_config: dict[str, Any] | None = None,
        **metrics: Any,
    ) -> None:
        """:func:`ymir_exc.result_writer.write_model_stage` with metrics as keyword arguments."""
        result_writer.write_model_stage(
            stage_name,
            list(files),
            evaluation_result=metrics,
            mAP=mAP,
            timestamp=timestamp,
            attachments=attachments,
            evaluate_config=evaluate_config,
        )

    def save_mining(self, scores: Mapping[str, float] | Iterable[tuple[str, float]]) -> None:
        """result.tsv from ``{path: score}`` or ``(path, score)`` pairs (sorted for you)."""
        pairs = scores.items() if isinstance(scores, Mapping) else scores
        result_writer.write_mining_result(list(pairs))

    def save_infer(self, results: Mapping[str, Sequence[Detection]]) -> None:
        """infer-result.json from ``{image path: [Detection, ...]}`` (one key per candidate)."""
        result_writer.write_infer_result({p: [d.to_annotation() for d in dets] for p, dets in results.items()})
