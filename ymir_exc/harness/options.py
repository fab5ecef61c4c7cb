"""RunOptions: the settings every run-like command (``run``, ``verify``, ``loop``) passes as one
object, from the command line or from Python.

Each field is named as its ``ymir-exc`` flag with ``-`` turned into ``_`` (``--gpu-id`` ->
``gpu_id``); ``user_config`` is what ``--config`` and ``--set`` add up to::

    from ymir_exc.harness import RunOptions

    options = RunOptions(runtime="local", timeout=600, quiet=True, user_config={"epochs": 2})
    cpu_only = dataclasses.replace(options, gpu_id="")
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ymir_exc.settings import PROTOCOL_VERSION

if TYPE_CHECKING:
    from ymir_exc.harness.models import ModelStore

#: the values of ``--assets``
ASSETS_MODES = ("auto", "link", "copy", "reflink")


@dataclass(frozen=True)
class RunOptions:
    """How an executor is run; the same for every task of one command.

    Attributes:
        runtime: ``auto`` (default: a folder runs locally, an image with docker if its daemon
            answers, else podman), ``local``, ``docker`` or ``podman``; the run functions get
            the resolved one (never ``auto``). For an image, the engine command itself (a path
            to a ``docker`` binary works too).
        protocol_version: env.yaml's ``protocol_version`` (default
            :data:`ymir_exc.settings.PROTOCOL_VERSION`, ``1.1.0``; ``0.x`` legacy, ``1.x``, ``2.x``).
        gpu_id: host GPU ids, e.g. ``"0,1"``; ``""`` (default) runs on the CPU.
        timeout: stop the executor after this many seconds (a positive number); None (default):
            no limit. Per task.
        user: containers: ``--user UID:GID``; None (default): the caller's uid and gid.
        network_none: containers: run with ``--network none`` (default False).
        model_location: the model store's folder; None (default): the command's own default
            (``$YMIR_EXC_MODEL_LOCATION`` or ``~/.ymir-exc/models`` for ``run``, a folder inside
            the work dir for ``verify``, ``OUT/models`` for ``loop``).
        user_config: hyper-parameters laid over the executor's img-man templates (``--config``
            with ``--set`` on top), reserved keys already removed; default none.
        quiet: no progress display (default False: a progress bar on a terminal, else a line
            per 10 %).
        assets: how images get into ``in/assets``: ``auto`` (default: a reflink where the file
            system can, else a hard link), ``link``, ``copy`` or ``reflink``.
        allow_unknown_keys: hand ``user_config`` keys that neither the executor's img-man
            templates nor the platform know over anyway (default False: such a key, e.g. a
            typo, is a ``ConfigFileError``); ``--allow-unknown-keys`` on the command line.

    Raises:
        ValueError: ``assets`` is not one of :data:`ASSETS_MODES`, or ``timeout`` is not a
            positive finite number (raised when the object is made).
    """

    runtime: str = "auto"
    protocol_version: str = PROTOCOL_VERSION
    gpu_id: str = ""
    timeout: float | None = None
    user: str | None = None
    network_none: bool = False
    model_location: str | Path | None = None
    user_config: Mapping[str, Any] = field(default_factory=dict)
    quiet: bool = False
    assets: str = "auto"
    allow_unknown_keys: bool = False

    def __post_init__(self) -> None:
        if self.assets not in ASSETS_MODES:
            raise ValueError(f"assets {self.assets!r}: expected one of {', '.join(ASSETS_MODES)}")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"timeout {self.timeout!r}: expected a positive number of seconds")

    @property
    def show(self) -> bool:
        """Show progress (not ``quiet``)."""
        return not self.quiet

    @property
    def container(self) -> bool:
        """The executor runs as an image (any runtime but ``local``)."""
        return self.runtime != "local"

    def model_store(self) -> ModelStore:
        """The model store at :attr:`model_location` (its default when None)."""
        from ymir_exc.harness.models import ModelStore

        return ModelStore(self.model_location)
