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


def peak_rss_bytes() -> int:
    """This process's own peak resident memory.

    Linux's `ru_maxrss` is not that: a process started by fork or vfork and exec reports its
    parent's peak if that was larger (the kernel keeps the old address space's high-water mark
    across exec), so a small child of a big test runner looks big. VmHWM belongs to the current
    address space only.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
