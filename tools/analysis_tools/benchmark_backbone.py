"""Training-step time and peak memory of dat_det's DAT against the official formulation.

Usage:
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
"""
import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import torch
import torch.nn as nn

from dat_det.models.layers.dat import pad_to_multiple
from dat_det.utils.memory import peak_rss_growth_mib


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
    times = {k: [] for k in models}
    for i in range(warmup + iters):
        for which, model in models.items():
            if device == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
            train_step(model, x, optimizers[which], which == 'official')
            if device == 'cuda':
                torch.cuda.synchronize()
            if i >= warmup:
                times[which].append(time.perf_counter() - start)
    return {k: 1000 * sorted(v)[len(v) // 2] for k, v in times.items()}


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


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='dat-t')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--sizes', nargs='+', default=None, help='HxW, e.g. 800x1333')
    parser.add_argument('--batch', type=int, default=None)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--json', default=None, help='also write the results here')
    return parser.parse_args()


def main():
    args = parse_args()
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
