"""Peak host memory of a piece of work (Linux), for CPU benchmarks.

The process's resident-set high-water mark (``VmHWM``) can be reset to the current RSS by
writing ``5`` to ``/proc/self/clear_refs``, so the growth of the mark over a call is that
call's peak, even when other work ran before it in the same process. Where the reset is not
available the mark is process-wide and :func:`peak_rss_growth_mib` says so by returning None.
"""
import resource
from typing import Callable, Optional, Tuple


def reset_peak_rss_kib() -> Optional[int]:
    """Reset the RSS high-water mark; the current RSS in KiB, None if it cannot be reset."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        return None
    return peak_rss_kib()


def peak_rss_kib() -> int:
    """The RSS high-water mark in KiB (since the last reset where supported)."""
    try:
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) for line in f if line.startswith('VmHWM'))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss_growth_mib(fn: Callable[[], object]) -> Tuple[object, Optional[float]]:
    """``fn()``'s result and the growth of the RSS high-water mark over the call in MiB."""
    start = reset_peak_rss_kib()
    result = fn()
    if start is None:
        return result, None
    return result, (peak_rss_kib() - start) / 1024
