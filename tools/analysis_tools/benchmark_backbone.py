"""Speed and memory of dat_det's DAT-T and DAT++-T against the backbones a user would otherwise
pick, measured in one run so that machine load affects all alike.

    python tools/analysis_tools/benchmark_backbone.py [--models dat-t dat++-t swin-t r50]
        [--device cpu|cuda] [--threads 1] [--infer-size 800x1333] [--train-size 512x512]
        [--iters 3] [--warmup 1] [--clock wall|cpu] [--profile-dir DIR] [--json FILE]

DAT-T and DAT++-T against timm's Swin-T (``swin_tiny_patch4_window7_224``, features of the
four stages, inputs zero-padded to a multiple of its patch size 4) and mmdet's ResNet-50 (four
stages, nothing frozen), all with random weights, no stochastic depth, batch 1: inference
time (``torch.no_grad``, eval mode) at ``--infer-size``, peak memory of that inference, and
training-step time (forward, backward of the squared features, AdamW step) at
``--train-size``. Times are medians over ``--iters`` calls after ``--warmup``, the models
taking turns call by call (``--clock cpu``: the process's CPU time, which other load on a
shared machine does not inflate; with one thread). Peak memory: on CPU the growth of the peak
RSS over the first inference in a fresh process per model (the model and input already
built); on CUDA the growth of ``max_memory_allocated`` over an inference after a
warm-up one. ``--profile-dir`` also writes a ``torch.profiler`` table (operators by self time,
with memory) of one inference and one training step per model.
"""
import argparse
import json
import multiprocessing as mp
from pathlib import Path
from typing import Callable, Dict, Tuple

import torch
import torch.nn as nn

from dat_det.models.layers.dat import pad_to_multiple
from dat_det.utils.memory import peak_rss_growth_mib
from dat_det.utils.timing import time_interleaved

PEER_LABELS = {'dat-t': 'DAT-T (dat_det)', 'dat++-t': 'DAT++-T (dat_det)',
               'swin-t': 'Swin-T (timm)', 'r50': 'ResNet-50 (mmdet)'}


class TimmFeatures(nn.Module):
    """timm ``features_only`` model on inputs zero-padded (bottom/right) to a multiple of
    ``divisor``, returning channel-first maps (Swin's are NHWC)."""

    def __init__(self, model: nn.Module, divisor: int, channels_last_out: bool) -> None:
        super().__init__()
        self.model = model
        self.divisor = divisor
        self.channels_last_out = channels_last_out

    def forward(self, x):
        x = pad_to_multiple(x, self.divisor)
        feats = self.model(x)
        if self.channels_last_out:
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        return tuple(feats)


def build_peer(name: str) -> nn.Module:
    """A backbone returning a tuple of four feature maps, random weights, no drop path."""
    torch.manual_seed(0)
    if name in ('dat-t', 'dat++-t'):
        from dat_det.models.backbones import DAT
        return DAT(arch=name, pretrain_img_size=224, drop_path_rate=0.0)
    if name == 'swin-t':
        import timm
        # strict_img_size=False: any size that is a multiple of the patch (4); timm pads the
        # maps to the window inside the blocks, as mmdet's Swin does for detection.
        model = timm.create_model('swin_tiny_patch4_window7_224', pretrained=False,
                                  features_only=True, strict_img_size=False,
                                  drop_path_rate=0.0)
        return TimmFeatures(model, divisor=4, channels_last_out=True)
    if name == 'r50':
        from mmdet.models.backbones import ResNet
        return ResNet(depth=50, out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False)
    raise ValueError(f'unknown peer {name!r}; choose from {list(PEER_LABELS)}')


def peer_train_step(model, x, optimizer):
    model.train()  # (mmdet's ResNet.train returns None: no chaining)
    loss = sum(f.float().square().mean() for f in model(x))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def peer_infer(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def interleaved_median_s(calls: Dict[str, Callable[[], object]], device: str, iters: int,
                         warmup: int, clock: str = 'wall') -> Dict[str, float]:
    """Median seconds of each call, the calls taking turns so that load affects all alike.
    ``clock='cpu'``: this process's CPU time (all its threads), which other processes on a
    shared machine do not inflate; comparable to wall time only with one thread."""
    timings = time_interleaved(calls, iters, warmup, device, clock=clock)
    return {k: t.median for k, t in timings.items()}


def inference_peak_mib(name: str, size: Tuple[int, int], device: str, threads: int,
                       queue=None) -> float:
    """Peak memory growth of one inference (CPU: first call in this fresh process)."""
    torch.set_num_threads(threads)
    model = build_peer(name).to(device)
    x = torch.randn(1, 3, *size, device=device)
    if device == 'cuda':
        peer_infer(model, x)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        peer_infer(model, x)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    else:
        _, peak = peak_rss_growth_mib(lambda: peer_infer(model, x))
        peak = float('nan') if peak is None else peak
    if queue is not None:
        queue.put(peak)
    return peak


def run_isolated_peak(name: str, size, device: str, threads: int) -> float:
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=inference_peak_mib, args=(name, size, device, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def write_profiles(models: Dict[str, nn.Module], infer_x, train_x, out_dir: Path) -> None:
    """One profiled inference and training step per model, tables sorted by self time."""
    from torch.profiler import ProfilerActivity, profile
    out_dir.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if infer_x.device.type == 'cuda' else [])
    sort = 'self_cuda_time_total' if infer_x.device.type == 'cuda' else 'self_cpu_time_total'
    for name, model in models.items():
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for what in ('infer', 'train'):
            with profile(activities=activities, profile_memory=True,
                         record_shapes=True) as prof:
                if what == 'infer':
                    peer_infer(model, infer_x)
                else:
                    peer_train_step(model, train_x, optimizer)
            table = prof.key_averages().table(sort_by=sort, row_limit=40)
            path = out_dir / f'{name}_{what}.txt'
            path.write_text(table)
            print(f'profile written to {path}', flush=True)


def peers_main(args) -> None:
    torch.set_num_threads(args.threads)
    device = args.device
    infer_size = tuple(int(v) for v in args.infer_size.split('x'))
    train_size = tuple(int(v) for v in args.train_size.split('x'))
    models = {name: build_peer(name).to(device) for name in args.models}
    infer_x = torch.randn(1, 3, *infer_size, device=device)
    train_x = torch.randn(1, 3, *train_size, device=device)
    infer_s = interleaved_median_s(
        {n: (lambda m=m: peer_infer(m, infer_x)) for n, m in models.items()},
        device, args.iters, args.warmup, args.clock)
    optimizers = {n: torch.optim.AdamW(m.parameters(), lr=1e-4) for n, m in models.items()}
    train_s = interleaved_median_s(
        {n: (lambda m=m, o=optimizers[n]: peer_train_step(m, train_x, o))
         for n, m in models.items()}, device, args.iters, args.warmup, args.clock)
    if args.profile_dir:
        write_profiles(models, infer_x, train_x, Path(args.profile_dir))
    del models, optimizers
    peaks = {}
    for name in args.models:
        peaks[name] = (inference_peak_mib(name, infer_size, device, args.threads)
                       if device == 'cuda' else
                       run_isolated_peak(name, infer_size, device, args.threads))
    base = 'swin-t' if 'swin-t' in args.models else args.models[0]
    rows = [dict(model=name, device=device, threads=args.threads, clock=args.clock,
                 infer_size=args.infer_size, infer_s=infer_s[name],
                 infer_peak_mib=peaks[name], train_size=args.train_size,
                 train_step_s=train_s[name],
                 infer_ratio=infer_s[name] / infer_s[base],
                 peak_ratio=peaks[name] / max(peaks[base], 1e-6),
                 train_ratio=train_s[name] / train_s[base]) for name in args.models]
    for r in rows:
        print(json.dumps(r), flush=True)
    mem = 'peak RSS growth' if device == 'cpu' else 'peak allocated growth'
    what = 'CPU time' if args.clock == 'cpu' else 'time'
    print(f'\n| backbone | inference {args.infer_size}: {what} | {mem} | '
          f'training step {args.train_size} | vs {PEER_LABELS[base]}: inference / memory / '
          f'training |')
    print('|---|---|---|---|---|')
    for r in rows:
        print(f"| {PEER_LABELS[r['model']]} | {r['infer_s']:.2f} s | "
              f"{r['infer_peak_mib'] / 1024:.2f} GiB | {r['train_step_s']:.2f} s | "
              f"{r['infer_ratio']:.2f}x / {r['peak_ratio']:.2f}x / {r['train_ratio']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='+', default=list(PEER_LABELS),
                        choices=list(PEER_LABELS), help='backbones to compare')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                        help="time by wall clock or by this process's CPU time (robust on a "
                             'shared machine; use with --threads 1)')
    parser.add_argument('--infer-size', default='800x1333', help='inference HxW')
    parser.add_argument('--train-size', default='512x512', help='training HxW')
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--profile-dir', default=None, help='write torch.profiler tables here')
    parser.add_argument('--json', default=None, help='also write the results here')
    return parser.parse_args()


def main():
    peers_main(parse_args())


if __name__ == '__main__':
    main()
