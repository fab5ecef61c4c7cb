"""Test executor: reports progress slowly and never finishes by itself (for --timeout tests)."""

import threading

from ymir_exc import monitor
from ymir_exc.executor import Executor


def slow(cfg):
    monitor.write_monitor_logger(0.1)
    threading.Event().wait()  # block until the harness stops us


if __name__ == "__main__":
    Executor(training=slow, mining=slow, infer=slow).main()
