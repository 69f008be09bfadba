"""Whether a process is still there: tells a live writer's temp files, runs and server handles from a
dead one's (which facepipe may then clean up)."""

from __future__ import annotations


def alive(pid: int) -> bool:
    """True while `pid` runs. A zombie (exited, not yet reaped) is gone; a process we may not inspect
    counts as alive, so nothing a live process might own is ever cleaned up."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.AccessDenied:
        return True
    except (psutil.NoSuchProcess, ValueError):
        return False
