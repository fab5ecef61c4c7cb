"""ymir_exc: the executor SDK for the YMIR platform, plus a local host harness.

Executor side (what an image imports; light, never imports torch or the harness)::

    from ymir_exc import dataset_reader as dr, env, monitor, result_writer as rw
    from ymir_exc.util import get_merged_config

    cfg = get_merged_config()                       # .param = config.yaml, .ymir = env.yaml
    for asset_path, annotation_path in dr.item_paths(env.DatasetType.TRAINING):
        ...
    monitor.write_monitor_logger(percent=0.5)
    rw.write_model_stage(stage_name="epoch_10", files=["best.pt"], mAP=0.61)

Host side: the ``ymir-exc`` command (``ymir_exc.cli``).
"""

__version__ = "2.1.0"

__all__ = ["__version__"]

# an uncaught exception in an executor process ends in state 4 (see ymir_exc._crash)
from ymir_exc import _crash as _crash  # noqa: E402

_crash.install()
