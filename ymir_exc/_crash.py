"""Report an uncaught exception of an executor as state 4 in monitor.txt.

The upstream SDK never wrote the error state: an image whose code raised left monitor.txt at
"running" and the platform learnt of the failure only from the exit code. Importing ``ymir_exc``
chains :func:`excepthook` in front of ``sys.excepthook``; when an exception escapes the
executor's main module and an env.yaml exists at ``settings.DEFAULT_ENV_FILE_PATH`` (so this is an
executor process, not the host harness), it writes state 4 with the exception's return code and
traceback, then lets Python print the traceback and exit non-zero as usual. An error code the
executor already wrote (``write_monitor_logger(p, ES_ERROR, code)`` and then ``raise``, as the
platform's sample apps do) is kept.
"""

from __future__ import annotations

import os
import sys
import traceback
from types import TracebackType

_previous = sys.excepthook


def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    try:
        from ymir_exc import settings

        if os.path.isfile(settings.DEFAULT_ENV_FILE_PATH):
            from ymir_exc import monitor
            from ymir_exc.executor import return_code_for

            lines = traceback.format_exception(exc_type, exc, tb)
            monitor.write_error(exc, return_code_for(exc), traceback_lines=lines[-20:])
    except Exception as e:
        print(f"ymir_exc: could not write the error state to monitor.txt: {e}", file=sys.stderr)
    _previous(exc_type, exc, tb)


def install() -> None:
    """Chain :func:`excepthook` once (idempotent)."""
    if sys.excepthook is not excepthook:
        global _previous
        _previous = sys.excepthook
        sys.excepthook = excepthook
