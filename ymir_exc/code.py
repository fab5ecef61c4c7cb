"""Executor states and return codes written to ``/out/monitor.txt``.

Values come from the YMIR platform and the upstream SDK (see docs/contract.md)::

    from ymir_exc.code import ExecutorState, ExecutorReturnCode
    ExecutorState.ES_ERROR, ExecutorReturnCode.RC_EXEC_OOM   # (4, 300103)
"""

from enum import IntEnum


class ExecutorState(IntEnum):
    """State column of monitor.txt (docs/contract.md#monitortxt): 1 pending, 2 running, 3 done,
    4 error.

    Example::

        >>> write_monitor_logger(1.0, ExecutorState.ES_DONE)   # doctest: +SKIP
        >>> int(ExecutorState.ES_ERROR)
        4
    """

    ES_PENDING = 1
    ES_RUNNING = 2
    ES_DONE = 3
    ES_ERROR = 4
    # alias used by some upstream images
    ES_SUCCESS = 3


class ExecutorReturnCode(IntEnum):
    """Return-code column of monitor.txt (0 = no error; docs/contract.md#return-codes).

    Example::

        >>> write_monitor_logger(0.3, ExecutorState.ES_ERROR, ExecutorReturnCode.RC_EXEC_OOM)  # doctest: +SKIP
        >>> int(ExecutorReturnCode.RC_EXEC_CONFIG_ERROR)
        300001
    """

    RC_EXEC_NO_ERROR = 0
    RC_EXEC_CONFIG_ERROR = 300001
    RC_EXEC_DATASET_ERROR = 300002
    RC_EXEC_UNKNOWN_IMAGE_FORMAT = 300003
    RC_EXEC_MODEL_ERROR = 300004
    RC_EXEC_CUDA_GPU_ERROR = 300101
    RC_EXEC_NO_GPU = 300102
    RC_EXEC_OOM = 300103
    RC_EXEC_NAN_ERROR = 300201
    RC_EXEC_NETWORK_ERROR = 300301
    #: generic failure of the executor / its container (the platform's code for a crashed container)
    RC_CMD_CONTAINER_ERROR = 160004
    # aliases (earlier names of this SDK; the upstream names above come first)
    RC_EXEC_IMAGE_FORMAT_ERROR = 300003
    RC_EXEC_CUDA_ERROR = 300101
