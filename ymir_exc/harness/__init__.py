"""The host side of ymir-exc: what the YMIR platform does around an executor, made local.

``datasets`` reads a dataset (the bundled sample, a YMIR ``in/`` folder, ...), ``workspace``
prepares ``W/in`` and ``W/out``, ``runtime`` runs the executor, ``collect`` checks and collects its
outputs, ``models`` stores model packages. The executor-side SDK never imports this package.

The Python API is :func:`run` (``ymir-exc run``) with :class:`RunOptions` (the flags that
``run``, ``verify`` and ``loop`` share)::

    from ymir_exc.harness import RunOptions, run

    outcome = run("det-demo-tmi", ["training"], "trees", RunOptions(quiet=True, user_config={"epochs": 2}))
    print(outcome.training.model_hash, outcome.training.mAP)

Both load on first use, so ``import ymir_exc.harness.runtime`` stays as light as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ymir_exc.harness.options import RunOptions
    from ymir_exc.harness.pipeline import TaskOutcome, run

__all__ = ["RunOptions", "TaskOutcome", "run"]

_EXPORTS = {
    "RunOptions": "ymir_exc.harness.options",
    "TaskOutcome": "ymir_exc.harness.pipeline",
    "run": "ymir_exc.harness.pipeline",
}


def __getattr__(name: str) -> Any:
    """The exports of ``__all__``, imported when first asked for."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
