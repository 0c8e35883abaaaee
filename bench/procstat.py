"""CPU a process has used, from Linux's ``/proc/<pid>/stat`` (the benches that time
another process: bench/peers.py's servers, bench/starters.py's worker)."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime + cutime + cstime of ``pid`` in seconds: every thread, and the children
    it has waited for (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after "pid (comm)": state is field 0, utime 11, stime 12, cutime 13, cstime 14
    return sum(int(v) for v in fields[11:15]) / TICKS
