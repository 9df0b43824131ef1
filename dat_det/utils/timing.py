"""One timing harness for the benchmark tools: calls timed interleaved, after warm-up rounds.

Several candidates (eager vs compiled, ours vs a reference, backends of an op) are timed in
rounds in which every candidate runs once, in alternating order, so that a load change on a
shared machine hits them alike and their ratio stays meaningful. Clocks:

* ``'wall'``: ``time.perf_counter`` around the call, with ``torch.cuda.synchronize`` before and
  after it on CUDA;
* ``'cpu'``: this process's CPU time (``time.process_time``, all its threads), which other
  processes on a shared machine do not inflate; comparable to wall time only with one thread;
* ``'cuda-events'``: CUDA events recorded around the call (GPU time of the stream, without
  the host's synchronisation latency); CUDA only.

:func:`profile` and :func:`time_shares` give one call's ``torch.profiler`` table and the
shares of its CPU time spent in groups of operators. Works with torch alone.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

CLOCKS = ('wall', 'cpu', 'cuda-events')


@dataclass
class Timing:
    """Seconds of each timed call of one candidate and its peak CUDA memory (MiB allocated
    during a call, the maximum over the timed calls; None when not tracked)."""
    times: List[float] = field(default_factory=list)
    peak_cuda_mib: Optional[float] = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def mean(self) -> float:
        return statistics.mean(self.times)


def _is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == 'cuda'


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work (no-op off CUDA)."""
    if _is_cuda(device):
        torch.cuda.synchronize(device)


def time_interleaved(calls: Mapping[str, Callable[[], object]], iters: int, warmup: int,
                     device: str | torch.device = 'cpu', clock: str = 'wall',
                     track_cuda_memory: bool = False,
                     on_call: Optional[Callable[[], None]] = None) -> Dict[str, Timing]:
    """Time each of ``calls`` ``iters`` times after ``warmup`` untimed rounds.

    Every round calls each candidate once; timed rounds alternate the order (forward, then
    reversed) so that no candidate always runs right after another. ``track_cuda_memory``
    records the peak CUDA memory allocated during the timed calls; ``on_call`` is called after
    each call (e.g. to advance a progress bar). Returns a :class:`Timing` per name.
    """
    if clock not in CLOCKS:
        raise ValueError(f'clock must be one of {CLOCKS}, got {clock!r}')
    cuda = _is_cuda(device)
    if clock == 'cuda-events' and not cuda:
        raise ValueError("clock='cuda-events' needs a CUDA device")
    if iters < 1:
        raise ValueError(f'iters must be >= 1, got {iters}')
    timer = time.process_time if clock == 'cpu' else time.perf_counter
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
            if on_call is not None:
                on_call()
    results = {name: Timing(peak_cuda_mib=0.0 if track_cuda_memory and cuda else None)
               for name in names}
    for it in range(iters):
        for name in (names if it % 2 == 0 else names[::-1]):
            result = results[name]
            synchronize(device)
            if track_cuda_memory and cuda:
                torch.cuda.reset_peak_memory_stats(device)
            if clock == 'cuda-events':
                start_event = torch.cuda.Event(enable_timing=True)
                end_event = torch.cuda.Event(enable_timing=True)
                start_event.record()
                calls[name]()
                end_event.record()
                torch.cuda.synchronize(device)
                result.times.append(start_event.elapsed_time(end_event) / 1e3)
            else:
                start = timer()
                calls[name]()
                synchronize(device)
                result.times.append(timer() - start)
            if result.peak_cuda_mib is not None:
                result.peak_cuda_mib = max(result.peak_cuda_mib,
                                           torch.cuda.max_memory_allocated(device) / 2**20)
            if on_call is not None:
                on_call()
    return results


def profile(fn: Callable[[], object], device: str | torch.device = 'cpu',
            row_limit: int = 40, path: Optional[Path] = None) -> Tuple[str, object]:
    """Profile one call of ``fn`` with ``torch.profiler``: its key-averages table, sorted by
    self time (CUDA self time on CUDA) and written to ``path`` when given, and its events
    (for :func:`time_shares`)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    cuda = _is_cuda(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        fn()
        synchronize(device)
    sort = 'self_cuda_time_total' if cuda else 'self_cpu_time_total'
    table = prof.key_averages().table(sort_by=sort, row_limit=row_limit)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table)
    return table, prof.events()


# operator groups of :func:`time_shares`: a profiler event belongs to the first group one of
# whose name fragments it contains
SHARE_GROUPS: Dict[str, Sequence[str]] = {
    'convolution': ('conv',),
    'deformable attention op': ('dat_det::',),
    'linear / matmul': ('aten::linear', 'aten::addmm', 'aten::mm', 'aten::bmm',
                        'aten::matmul', 'aten::baddbmm'),
    'random numbers': ('aten::bernoulli',),
}


def _group(name: str, groups: Mapping[str, Sequence[str]]) -> Optional[str]:
    return next((g for g, parts in groups.items() if any(p in name for p in parts)), None)


def time_shares(events, groups: Mapping[str, Sequence[str]] = SHARE_GROUPS
                ) -> Dict[str, float]:
    """Fractions of the profiled CPU time (the sum of all events' self time) spent in each
    group of operators, counting each group's outermost events with their children (so an
    opaque operator's inner element-wise work counts to it); ``'total_ms'``: that sum."""
    total = sum(e.self_cpu_time_total for e in events)
    shares = {g: 0.0 for g in groups}
    for event in events:
        group = _group(event.name, groups)
        if group is None:
            continue
        parent = event.cpu_parent
        while parent is not None and _group(parent.name, groups) != group:
            parent = parent.cpu_parent
        if parent is None:  # outermost event of its group
            shares[group] += event.cpu_time_total
    result = {g: v / max(total, 1e-9) for g, v in shares.items()}
    result['total_ms'] = total / 1e3
    return result
