"""Test executor: reports some progress, then raises (through the SDK's Executor wrapper)."""

from ymir_exc import monitor
from ymir_exc.executor import Executor


def fail(cfg):
    monitor.write_monitor_logger(0.3)
    raise RuntimeError("this executor crashes on purpose")


if __name__ == "__main__":
    Executor(training=fail, mining=fail, infer=fail).main()
