"""``monitor.txt``: the executor's progress line, written by :mod:`ymir_exc.monitor` and read by
the harness (:mod:`ymir_exc.harness.runtime` follows it, :func:`ymir_exc.harness.collect.check_monitor`
checks it), both through this module.

The file's first line (docs/contract.md)::

    <task_id>\\t<unix time, seconds>\\t<percent %.2f in [0, 1]>\\t<state>\\t<return code>

followed, for an error, by optional lines with the message / traceback.

Example::

    >>> from ymir_exc.formats.monitor import format_monitor_line, parse_monitor
    >>> line = format_monitor_line("t1", 1700000000.0, 0.5, 2, 0)
    >>> line
    't1\\t1700000000.000000\\t0.50\\t2\\t0'
    >>> parse_monitor(line + "\\n").percent
    0.5
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class MonitorState(BaseModel):
    """One reading of monitor.txt: its first line's five fields, the lines after it
    (``message``, no trailing newline) and the whole text read (``raw``).

    ``timestamp`` is unix seconds; ``percent`` a fraction (the writer keeps it in [0, 1], a
    reader checks that itself); ``state`` an :class:`~ymir_exc.code.ExecutorState` value (2
    running, 3 done, 4 error); ``return_code`` an :class:`~ymir_exc.code.ExecutorReturnCode`.
    """

    model_config = ConfigDict(defer_build=True)

    task_id: str
    timestamp: float
    percent: float
    state: int
    return_code: int
    message: str = ""
    raw: str = ""


def format_monitor_line(task_id: str, timestamp: float, percent: float, state: int, return_code: int) -> str:
    """One monitor.txt line (no newline):
    ``task_id \\t timestamp:.6f \\t percent:.2f \\t state \\t return_code``.

    Raises:
        ValueError / TypeError: a timestamp or percent that is not a number, a state or return
            code that ``int()`` cannot convert.
    """
    return f"{task_id}\t{timestamp:.6f}\t{percent:.2f}\t{int(state)}\t{int(return_code)}"


def _field(name: str, raw: str, kind: type[float] | type[int]) -> float:
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name} {raw[:40]!r} is not {'a number' if kind is float else 'an integer'}") from None


def parse_monitor(text: str) -> MonitorState:
    """Parse monitor.txt content (the inverse of :func:`format_monitor_line` for its first line).

    Raises:
        ValueError: empty text, a first line that is not five tab-separated fields, or a field
            that is not a number (timestamp, percent) / an integer (state, return code); the
            message names the field.
    """
    lines = text.splitlines()
    if not lines:
        raise ValueError("monitor.txt is empty")
    parts = lines[0].split("\t")
    if len(parts) != 5:
        raise ValueError(f"first line has {len(parts)} tab-separated fields, expected 5: {lines[0]!r}")
    task_id, ts, pct, state, rc = parts
    return MonitorState(
        task_id=task_id,
        timestamp=_field("timestamp", ts, float),
        percent=_field("percent", pct, float),
        state=int(_field("state", state, int)),
        return_code=int(_field("return_code", rc, int)),
        message="\n".join(lines[1:]),
        raw=text,
    )
