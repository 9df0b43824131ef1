"""Speed and memory of dat_det's DAT: against the official formulation, or against peer backbones.

Two comparisons, each measured in one run so that machine load affects both sides alike.

**Against the official formulation** (default):

    python tools/analysis_tools/benchmark_backbone.py [--arch dat-t] [--device cpu|cuda]
        [--sizes 224x224 512x512] [--batch 1] [--iters 5] [--warmup 2]

Both models are built in the same run with identical weights: dat_det's ``DAT`` and the
reference port of the official code in ``dat_det.testing.dat_official``
(einsum attention with the bias materialised, official module structure). To run the
reference at sizes the official code rejects, its L/S window attention is wrapped with
the same zero padding to the window that dat_det uses, and its N blocks (natten in the
official code, not a dependency here) use dat_det's neighbourhood attention: the comparison
therefore isolates the deformable attention, MLP and stage code. The reference is the DAT++
release, which, unlike the v1 release, runs at any size; for a 'v1' arch (``dat-*``) dat_det's
model is built with DAT++'s grid normalisation (``formulation='v2'``, the same operations and
cost) so that the feature check compares like with like (v1 is tested equal to the v1 release
in the tests). A training step is forward,
backward of the squared outputs and an AdamW step; the two models alternate steps so that
machine load affects both alike (median of ``--iters``). Peak memory: on CUDA the growth of
``max_memory_allocated`` over a step after a warm-up step; on CPU the peak RSS growth over two
steps (grads and optimizer state included) of a fresh subprocess per model. Defaults: CPU at 224
and 512 (batch 1); with ``--device cuda``: 800x1333, batch 2.

**Against peer backbones** (``--peers``):

    python tools/analysis_tools/benchmark_backbone.py --peers [--models dat-t dat++-t swin-t r50]
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


def load_reference():
    from dat_det.testing import dat_official
    return dat_official


class PadToWindow(nn.Module):
    """Zero-pads the input of an official window attention to its window and crops back."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, x):
        h, w = x.shape[-2:]
        y, _, _ = self.attn(pad_to_multiple(x, self.attn.window_size))
        return y[:, :, :h, :w], None, None


def stage_sizes(arch_settings, size, patch_size=4):
    h, w = size
    if arch_settings['use_conv_patches']:
        h, w = -(-h // 2), -(-w // 2)
        h, w = -(-h // 2), -(-w // 2)
    else:
        h, w = -(-h // patch_size), -(-w // patch_size)
    sizes = []
    for _ in range(4):
        sizes.append((h, w))
        h, w = -(-h // 2), -(-w // 2)
    return sizes


def build_models(arch: str, size):
    from dat_det.models.backbones import DAT
    from dat_det.models.layers.dat import NeighborhoodAttention2D, resolve_arch
    ref = load_reference()
    settings = resolve_arch(arch)
    torch.manual_seed(0)
    reference = ref.OfficialDAT(img_size=224, **settings)
    ours = DAT(arch=arch, pretrain_img_size=224, drop_path_rate=0.0, formulation='v2')
    for i, (stage, (h, w)) in enumerate(zip(reference.stages, stage_sizes(settings, size))):
        ws = settings['window_sizes'][i]
        padded = (-(-h // ws) * ws, -(-w // ws) * ws)
        for d, attn in enumerate(stage.attns):
            if isinstance(attn, ref.ShiftWindowAttention):
                new = ref.ShiftWindowAttention(stage.layer_norms[0].norm.normalized_shape[0],
                                               attn.heads, ws, 0.0, 0.0, attn.shift_size,
                                               padded)
                new.load_state_dict({k: v for k, v in attn.state_dict().items()
                                     if k != 'attn_mask'}, strict=False)
                stage.attns[d] = PadToWindow(new)
            elif isinstance(attn, ref.LocalAttention):
                stage.attns[d] = PadToWindow(attn)
            elif isinstance(attn, ref.NaiveNeighborhoodAttention2D):
                na = NeighborhoodAttention2D(attn.qkv.in_features, attn.kernel_size,
                                             attn.num_heads)
                na.load_state_dict(attn.state_dict())
                stage.attns[d] = na
    state = {k.replace('.attn.', '.'): v for k, v in reference.state_dict().items()}
    report = ours.load_state_dict(state, strict=False)
    assert not [k for k in report.missing_keys if not k.startswith('norms.')], report
    return reference, ours


def train_step(model, x, optimizer, official):
    feats = model.forward_features(x) if official else model(x)
    loss = sum(f.float().square().mean() for f in feats)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return feats


def step_peak_mib(which: str, arch: str, size, batch: int, device: str, queue=None):
    """Peak memory of one training step (after a warm-up step) of one model."""
    reference, ours = build_models(arch, size)
    model = (reference if which == 'official' else ours).to(device).train()
    del reference, ours
    x = torch.randn(batch, 3, *size, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if device == 'cuda':
        train_step(model, x, optimizer, which == 'official')  # allocates grads / opt. state
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        train_step(model, x, optimizer, which == 'official')
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    else:  # the RSS high-water mark includes the first step's grads and optimizer state
        _, peak = peak_rss_growth_mib(lambda: [
            train_step(model, x, optimizer, which == 'official') for _ in range(2)])
        peak = float('nan') if peak is None else peak
    if queue is not None:
        queue.put(peak)
    return peak


def interleaved_step_ms(arch: str, size, batch: int, device: str, iters: int, warmup: int):
    """Median training-step time of both models, alternating steps so that machine load
    affects both alike."""
    reference, ours = build_models(arch, size)
    models = dict(official=reference.to(device).train(), dat_det=ours.to(device).train())
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    x = torch.randn(batch, 3, *size, device=device)
    timings = time_interleaved(
        {k: (lambda k=k, m=m: train_step(m, x, optimizers[k], k == 'official'))
         for k, m in models.items()}, iters, warmup, device)
    return {k: 1000 * t.median for k, t in timings.items()}


def check_equal(arch: str, size, device: str) -> float:
    reference, ours = build_models(arch, size)
    x = torch.randn(1, 3, *size, device=device)
    with torch.no_grad():
        feats = reference.to(device).eval().forward_features(x)
        outs = ours.to(device).eval()(x)
        return max((o - n(f)).abs().max().item()
                   for o, f, n in zip(outs, feats, ours.norms))


def run_isolated(*args):
    """One peak-memory measurement in a fresh process (CPU peak RSS is per process)."""
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=step_peak_mib, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


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
    parser.add_argument('--arch', default='dat-t')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--sizes', nargs='+', default=None, help='HxW, e.g. 800x1333')
    parser.add_argument('--batch', type=int, default=None)
    parser.add_argument('--iters', type=int, default=None, help='default 5 (--peers: 3)')
    parser.add_argument('--warmup', type=int, default=None, help='default 2 (--peers: 1)')
    parser.add_argument('--json', default=None, help='also write the results here')
    parser.add_argument('--peers', action='store_true',
                        help='compare against peer backbones instead of the official code')
    parser.add_argument('--models', nargs='+', default=list(PEER_LABELS),
                        choices=list(PEER_LABELS), help='--peers: backbones to compare')
    parser.add_argument('--threads', type=int, default=1, help='--peers: torch CPU threads')
    parser.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                        help="--peers: time by wall clock or by this process's CPU time "
                             '(robust on a shared machine; use with --threads 1)')
    parser.add_argument('--infer-size', default='800x1333', help='--peers: inference HxW')
    parser.add_argument('--train-size', default='512x512', help='--peers: training HxW')
    parser.add_argument('--profile-dir', default=None,
                        help='--peers: write torch.profiler tables here')
    args = parser.parse_args()
    if args.iters is None:
        args.iters = 3 if args.peers else 5
    if args.warmup is None:
        args.warmup = 1 if args.peers else 2
    return args


def main():
    args = parse_args()
    if args.peers:
        peers_main(args)
        return
    cuda = args.device == 'cuda'
    sizes = args.sizes or (['800x1333'] if cuda else ['224x224', '512x512'])
    batch = args.batch or (2 if cuda else 1)
    rows = []
    for text in sizes:
        size = tuple(int(v) for v in text.split('x'))
        diff = check_equal(args.arch, size, args.device)
        step_ms = interleaved_step_ms(args.arch, size, batch, args.device, args.iters,
                                      args.warmup)
        peak = {}
        for which in ('official', 'dat_det'):
            run = step_peak_mib if cuda else run_isolated
            peak[which] = run(which, args.arch, size, batch, args.device)
        rows.append(dict(arch=args.arch, device=args.device, size=text, batch=batch,
                         official_ms=step_ms['official'], dat_det_ms=step_ms['dat_det'],
                         speedup=step_ms['official'] / step_ms['dat_det'],
                         official_peak_mib=peak['official'], dat_det_peak_mib=peak['dat_det'],
                         memory_ratio=peak['official'] / max(peak['dat_det'], 1e-6),
                         max_abs_feature_diff=diff))
        print(json.dumps(rows[-1]), flush=True)
    print('\n| arch | device | size | batch | official ms | dat_det ms | speed-up | '
          'official MiB | dat_det MiB | memory ratio |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['arch']} | {r['device']} | {r['size']} | {r['batch']} | "
              f"{r['official_ms']:.0f} | {r['dat_det_ms']:.0f} | {r['speedup']:.2f}x | "
              f"{r['official_peak_mib']:.0f} | {r['dat_det_peak_mib']:.0f} | "
              f"{r['memory_ratio']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == '__main__':
    main()
