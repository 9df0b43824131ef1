"""The shared timing harness of the benchmark tools: call order, counts, clocks (no timings)."""
import time

import pytest

from dat_det.utils.timing import Timing, time_interleaved


def test_rounds_interleave_and_alternate_after_warmup():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in 'abc'}
    progress = []
    timings = time_interleaved(calls, iters=3, warmup=2, on_call=lambda: progress.append(1))
    assert order == list('abc') * 2 + list('abc') + list('cba') + list('abc')
    assert len(progress) == len(order)
    assert all(len(t.times) == 3 for t in timings.values())
    assert all(t.peak_cuda_mib is None for t in timings.values())


def test_cpu_clock_does_not_count_sleeping():
    timings = time_interleaved({'sleep': lambda: time.sleep(0.05)}, iters=2, warmup=0,
                               clock='cpu')
    wall = time_interleaved({'sleep': lambda: time.sleep(0.05)}, iters=2, warmup=0)
    assert max(timings['sleep'].times) < 0.04
    assert wall['sleep'].min >= 0.05


def test_statistics():
    timing = Timing(times=[3.0, 1.0, 2.0, 10.0])
    assert (timing.median, timing.min, timing.mean) == (2.5, 1.0, 4.0)


@pytest.mark.parametrize('kwargs', [dict(clock='gpu'), dict(clock='cuda-events'),
                                    dict(iters=0)])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        time_interleaved({'f': lambda: None}, **{'iters': 1, 'warmup': 0, **kwargs})


def test_time_shares_count_nested_operators_once(tmp_path):
    """conv2d runs inside convolution, _convolution, ...: its group counts the outermost."""
    import torch
    import torch.nn.functional as F

    from dat_det.utils.timing import profile, time_shares

    x, w, m = torch.randn(1, 16, 96, 96), torch.randn(16, 16, 3, 3), torch.randn(32, 32)
    table, events = profile(lambda: (F.conv2d(x, w), m @ m), path=tmp_path / 'table.txt')
    assert 'aten::conv2d' in table and (tmp_path / 'table.txt').read_text() == table
    shares = time_shares(events)
    assert 0 < shares['convolution'] <= 1 and 0 < shares['linear / matmul'] <= 1
    assert shares['convolution'] + shares['linear / matmul'] <= 1 + 1e-6
    assert shares['deformable attention op'] == 0 and shares['total_ms'] > 0
