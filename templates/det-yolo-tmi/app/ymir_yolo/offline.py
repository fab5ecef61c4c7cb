"""Make Ultralytics work offline, as a non-root user, with a read-only /in.

Call :func:`prepare_environment` before the first ``import ultralytics`` (Ultralytics reads its
environment variables at import), then :func:`apply_settings` after it::

    from ymir_yolo.offline import prepare_environment, apply_settings
    config_dir = prepare_environment()       # sets YOLO_OFFLINE, YOLO_CONFIG_DIR, ... ; places a font
    import ultralytics
    apply_settings(runs_dir="/out/ultralytics")

What it sets (only where the caller has not set it already, except ``YOLO_CONFIG_DIR`` which is
replaced when the given folder is not writable):

- ``YOLO_OFFLINE=1``: Ultralytics skips its online checks (hub, GitHub releases, fonts).
- ``YOLO_AUTOINSTALL=false``: Ultralytics never runs ``pip install`` at run time.
- ``YOLO_CONFIG_DIR``: a writable folder for ``settings.json`` (a fresh temp dir by default: the
  image's HOME may not be writable under ``docker run --user``). When the given folder is not
  writable, its ``Ultralytics/`` contents (the settings and fonts the image prepared at build
  time) are copied into the fresh one.
- ``MPLCONFIGDIR``: matplotlib's cache, inside the same folder.
- a TrueType font at ``$YOLO_CONFIG_DIR/Ultralytics/Arial.ttf`` and ``Arial.Unicode.ttf``
  (plots ask for them and would download them otherwise): DejaVuSans from matplotlib (an
  Ultralytics dependency) or from the system's fonts.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from typing import Any

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
_SYSTEM_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
)


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def find_font() -> str | None:
    """A TrueType font on this machine (matplotlib's DejaVuSans, else a system font), or None."""
    spec = importlib.util.find_spec("matplotlib")
    candidates: list[str] = []
    if spec is not None and spec.origin:
        candidates.append(os.path.join(os.path.dirname(spec.origin), "mpl-data", "fonts", "ttf", "DejaVuSans.ttf"))
    candidates.extend(_SYSTEM_FONTS)
    return next((c for c in candidates if os.path.isfile(c)), None)


def prepare_environment(config_dir: str | None = None) -> str:
    """Set the offline environment (see the module docstring); returns the Ultralytics config folder
    (``$YOLO_CONFIG_DIR/Ultralytics``)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    base = config_dir or os.environ.get("YOLO_CONFIG_DIR")
    seed = None
    if not base or not _writable_dir(base):
        # e.g. the image's /opt/ultralytics-config, prepared at build time, read-only for the
        # platform's --user: its settings and fonts seed the fresh folder
        seed = os.path.join(base, "Ultralytics") if base else None
        base = tempfile.mkdtemp(prefix="ymir-yolo-config-")
    os.environ["YOLO_CONFIG_DIR"] = base
    ultra_dir = os.path.join(base, "Ultralytics")
    if seed is not None and os.path.isdir(seed):
        shutil.copytree(seed, ultra_dir, dirs_exist_ok=True)
        for root, dirs, files in os.walk(ultra_dir):  # copies keep the read-only modes
            for name in dirs + files:
                path = os.path.join(root, name)
                os.chmod(path, os.stat(path).st_mode | 0o600 | (0o100 if name in dirs else 0))
    os.makedirs(ultra_dir, exist_ok=True)
    mpl = os.path.join(base, "matplotlib")
    os.makedirs(mpl, exist_ok=True)
    os.environ.setdefault("MPLCONFIGDIR", mpl)
    font = find_font()
    if font is not None:
        for name in FONT_NAMES:
            dst = os.path.join(ultra_dir, name)
            if not os.path.exists(dst):
                shutil.copyfile(font, dst)
    return ultra_dir


def apply_settings(**overrides: Any) -> None:
    """After ``import ultralytics``: turn off every online integration and the settings sync, and
    apply ``overrides`` (e.g. ``runs_dir``). Changes only the settings file in YOLO_CONFIG_DIR."""
    from ultralytics.utils import SETTINGS

    wanted = {
        "sync": False,
        "hub": False,
        "tensorboard": False,
        "wandb": False,
        "mlflow": False,
        "clearml": False,
        "comet": False,
        "dvc": False,
        "neptune": False,
        "raytune": False,
        "vscode_msg": False,
        "openvino_msg": False,
    }
    wanted.update(overrides)
    known = {k: v for k, v in wanted.items() if k in SETTINGS}
    if any(SETTINGS.get(k) != v for k, v in known.items()):
        SETTINGS.update(known)
