"""``compile = ...`` in a config: the runner of tools/train.py's config
(:func:`dat_det.engine.build_train_config`) trains the model's compiled ``train_step``
(mmengine's compile option) and its losses equal eager training's.

The ``eager`` backend runs Dynamo's graph capture (graph breaks at the Hungarian matcher
included) and then the captured graphs as they are, to keep CI time low; AOT autograd and
Inductor on the same model are tested in tests/models/test_compile.py and by
tests/tools/test_benchmarks.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dat_det.engine import build_train_config
from tests.helpers.tiny_configs import tiny_ddetr_config

ITERS = 2
SIZE = (64, 64)  # one input size: one compilation, the test stays cheap


def _train(base: Path, work_dir: Path, compile_cfg) -> tuple[dict, object]:
    """Train ``ITERS`` iterations with a config that inherits ``base`` and sets ``compile``:
    the losses of each iteration ({key: [values]}) and the runner."""
    from dat_det.engine import build_runner
    work_dir.mkdir()
    config = work_dir / 'config.py'
    config.write_text(f"""
_base_ = ['{base}']
compile = {compile_cfg!r}
experiment_name = '{work_dir.name}'
randomness = dict(seed=0, deterministic=True)
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={ITERS},
                 val_interval={ITERS + 1})
train_dataloader = dict(
    sampler=dict(type='InfiniteSampler', shuffle=False), batch_sampler=None,
    dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale={SIZE}, keep_ratio=False), dict(type='PackDetInputs')]))
val_dataloader = val_cfg = val_evaluator = None
test_dataloader = test_cfg = test_evaluator = None
default_hooks = dict(checkpoint=None)
""")
    cfg, _ = build_train_config(str(config), work_dir=str(work_dir))
    runner = build_runner(cfg)
    runner.train()
    history = {key[len('train/'):]: [float(v) for v in scalar.data[0]]
               for key, scalar in runner.message_hub.log_scalars.items()
               if key.startswith('train/loss')}
    return history, runner


@pytest.mark.filterwarnings('ignore')
def test_config_compile_trains_like_eager(tmp_path, tiny_shapes_root):
    torch._dynamo.reset()
    config = tiny_ddetr_config(tmp_path, tiny_shapes_root)
    eager, _ = _train(config, tmp_path / 'eager', None)
    frames_before = torch._dynamo.utils.counters['stats']['unique_graphs']
    compiled, runner = _train(config, tmp_path / 'compiled', dict(backend='eager'))

    # the runner's train_step is the compiled function and Dynamo captured graphs in it
    assert hasattr(runner.model.train_step, '_torchdynamo_orig_callable')
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] > frames_before

    assert eager.keys() == compiled.keys() and 'loss' in eager
    for key in eager:
        assert len(compiled[key]) == len(eager[key]) == ITERS, key
        assert all(torch.isfinite(torch.tensor(compiled[key]))), (key, compiled[key])
        # step 1: the same weights and batch; step 2 also went through one compiled update
        torch.testing.assert_close(torch.tensor(compiled[key]), torch.tensor(eager[key]),
                                   atol=1e-4, rtol=1e-4, msg=key)
    torch._dynamo.reset()


@pytest.mark.parametrize('given, expected', [
    (None, None),
    (False, False),
    (True, dict(options=dict(fallback_random=True))),
    (dict(dynamic=False), dict(dynamic=False, options=dict(fallback_random=True))),
    # the config's own options win; other options are kept
    (dict(options=dict(fallback_random=False, freezing=True)),
     dict(options=dict(fallback_random=False, freezing=True))),
    # torch.compile takes a mode or options, and other backends have no such option
    (dict(mode='max-autotune'), dict(mode='max-autotune')),
    (dict(backend='eager'), dict(backend='eager')),
])
def test_cpu_training_compile_options(given, expected):
    from dat_det.engine.compile_options import with_cpu_training_options
    assert with_cpu_training_options(given, cuda=False) == expected
    assert with_cpu_training_options(given, cuda=True) == given


def test_train_config_adds_the_cpu_options(tmp_path, tiny_shapes_root, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    base = tiny_ddetr_config(tmp_path, tiny_shapes_root)
    config = tmp_path / 'compiled.py'
    config.write_text(f"_base_ = ['{base}']\ncompile = True\n")
    cfg, _ = build_train_config(str(config), work_dir=str(tmp_path / 'work'))
    assert cfg.compile == dict(options=dict(fallback_random=True))


@pytest.mark.filterwarnings('ignore')
def test_compiled_dropout_draws_eagers_random_numbers():
    """With the CPU options, Inductor's training graph calls eager's generator: the same seed
    gives the same dropout masks, outputs and gradients as eager (Inductor's own generator
    would draw other masks)."""
    from dat_det.engine.compile_options import with_cpu_training_options
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(),
                                torch.nn.Dropout(0.5), torch.nn.Linear(64, 4))
    x = torch.randn(32, 16)
    compiled = torch.compile(model, **with_cpu_training_options(True, cuda=False))

    def step(fn):
        model.zero_grad()
        torch.manual_seed(1)
        out = fn(x)
        out.square().sum().backward()
        return out.detach(), model[0].weight.grad.clone()

    step(compiled)  # compiles
    out_eager, grad_eager = step(model)
    out_compiled, grad_compiled = step(compiled)
    torch.testing.assert_close(out_compiled, out_eager)
    torch.testing.assert_close(grad_compiled, grad_eager)
    torch._dynamo.reset()
