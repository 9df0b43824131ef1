"""The model benchmarks run end to end and report what they promise (timings are not checked)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO_ROOT
from tests.helpers.tool_runs import run_tool


def _assert_ok(proc) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def test_detector_benchmark_compares_with_mmdet(tmp_path, tiny_shapes_root):
    pytest.importorskip('mmdet')
    from tests.helpers.tiny_configs import tiny_ddetr_config

    # not two-stage: mmdet's proposal embedding is hard-wired to 256 channels
    config = tiny_ddetr_config(tmp_path, tiny_shapes_root, with_box_refine=True)
    proc = run_tool('analysis_tools/benchmark.py', str(config), '--compare', '--train',
                    '--img-size', '96', '128', '--iters', '2', '--warmup', '1')
    _assert_ok(proc)
    out = proc.stdout
    for name in ('MSDADeformableDETR', 'mmdet DeformableDETR'):
        assert re.search(rf'\[{name}\] inference: [\d.]+ ms/batch .* peak memory \d+ MiB', out)
        assert re.search(rf'\[{name}\] train iteration: [\d.]+ ms', out)
    # same weights, same batch: the same encoder output, and the same detections
    memory = float(re.search(r'max \|ours - mmdet\| over the encoder output: (\S+)', out)[1])
    assert memory < 1e-4
    diff = float(re.search(r'max \|ours - mmdet\| over scores and boxes: (\S+)', out).group(1))
    assert diff < 1e-3
    assert re.search(r'speed-up of ours over mmdet, inference: [\d.]+x', out)
    assert re.search(r'speed-up of ours over mmdet, train: [\d.]+x', out)


def test_detector_benchmark_compiles_and_profiles(tmp_path, tiny_shapes_root):
    """--compile times eager and compiled (aot_eager: graph capture without code generation,
    cheap) and --profile writes a profiler table per model and step with operator shares."""
    pytest.importorskip('mmdet')
    from tests.helpers.tiny_configs import tiny_ddetr_config

    config = tiny_ddetr_config(tmp_path, tiny_shapes_root)
    profile_dir = tmp_path / 'profile'
    proc = run_tool('analysis_tools/benchmark.py', str(config), '--compile',
                    '--compile-backend', 'aot_eager', '--train', '--img-size', '64', '64',
                    '--iters', '1', '--warmup', '1', '--train-warmup', '1', '--clock', 'cpu',
                    '--profile', str(profile_dir))
    _assert_ok(proc)
    out = proc.stdout
    diff = float(re.search(r'max \|compiled - eager\| over scores and boxes: (\S+)',
                           out).group(1))
    assert diff < 1e-4
    assert re.search(r'speed-up of compiled over eager, train: [\d.]+x', out)
    tables = sorted(p.name for p in profile_dir.iterdir())
    assert tables == ['MSDADeformableDETR__torch.compile_inference.txt',
                      'MSDADeformableDETR__torch.compile_train.txt',
                      'MSDADeformableDETR_inference.txt', 'MSDADeformableDETR_train.txt']
    # the eager table lists dat_det's operator, and the shares name it with a nonzero share
    assert 'dat_det::multi_scale_deformable_attn' in (
        profile_dir / 'MSDADeformableDETR_train.txt').read_text()
    shares = re.search(r'\[MSDADeformableDETR\] profiled train: [\d.]+ ms CPU time; '
                       r'convolution (\d+)%, deformable attention op (\d+)%', out)
    assert shares and int(shares.group(2)) > 0


def test_backbone_benchmark_compares_with_peer_backbones(tmp_path):
    pytest.importorskip('mmdet')
    pytest.importorskip('timm')
    out_json = tmp_path / 'peers.json'
    proc = run_tool('analysis_tools/benchmark_backbone.py', '--infer-size', '61x75',
                    '--train-size', '64x64', '--iters', '1', '--warmup', '0',
                    '--json', str(out_json))
    _assert_ok(proc)
    rows = {r['model']: r for r in json.loads(out_json.read_text())}
    assert set(rows) == {'dat-t', 'dat++-t', 'swin-t', 'r50'}
    for name, row in rows.items():
        assert row['infer_s'] > 0 and row['train_step_s'] > 0, name
        assert row['infer_peak_mib'] >= 0, name  # NaN where the peak cannot be measured
    assert rows['swin-t']['infer_ratio'] == 1.0
    assert re.search(r'\| DAT\+\+-T \(dat_det\) \| [\d.]+ s \| [\d.]+ GiB \| [\d.]+ s \|',
                     proc.stdout)


def test_detector_benchmark_trains_under_bf16_autocast(tmp_path, tiny_shapes_root):
    """``--bf16``: the training step runs its forward and loss under bfloat16 autocast (the
    GPU target script uses it for DINO, where mmcv's op has no bf16)."""
    pytest.importorskip('mmdet')
    from tests.helpers.tiny_configs import tiny_ddetr_config

    config = tiny_ddetr_config(tmp_path, tiny_shapes_root, with_box_refine=True)
    proc = run_tool('analysis_tools/benchmark.py', str(config), '--train', '--bf16',
                    '--img-size', '96', '128', '--iters', '2', '--warmup', '1')
    _assert_ok(proc)
    assert 'training under bfloat16 autocast' in proc.stdout
    assert 'first linear layer output in training: torch.bfloat16' in proc.stdout
    assert re.search(r'\[MSDADeformableDETR\] train iteration: [\d.]+ ms', proc.stdout)


def test_detector_benchmark_trains_a_mask_config():
    """Mask heads need ground-truth masks in the random batch (and labels below the head's
    class count)."""
    pytest.importorskip('mmdet')
    config = REPO_ROOT / 'configs' / 'dat' / 'mask-rcnn_dat-t_fpn_amp-ms-crop-1x_coco.py'
    proc = run_tool('analysis_tools/benchmark.py', str(config), '--train', '--img-size', '96',
                    '96', '--iters', '1', '--warmup', '0')
    _assert_ok(proc)
    assert re.search(r'\[MaskRCNN\] train iteration: [\d.]+ ms', proc.stdout)


@pytest.mark.skipif(torch.cuda.is_available(), reason='a CUDA device is visible')
def test_gpu_targets_script_refuses_without_cuda(tmp_path):
    script = REPO_ROOT / 'tools' / 'analysis_tools' / 'gpu_targets.sh'
    proc = subprocess.run(['bash', str(script), str(tmp_path / 'out')], capture_output=True,
                          text=True, env={**os.environ, 'PY': sys.executable},
                          timeout=300)
    assert proc.returncode == 2
    assert 'no CUDA device' in proc.stderr
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('arch', ['dat-t', 'dat++-t'])  # the 'v1' and 'v2' formulations
def test_dat_attention_benchmark_checks_the_in_kernel_bias(arch):
    """The FlexAttention alternative builds the position bias inside the kernel from the
    table; its output must equal the block's own attention (grid_sample bias + SDPA)."""
    proc = run_tool('analysis_tools/benchmark_dat_attention.py', '--arch', arch, '--stage',
                    '3', '--size', '96x160', '--iters', '1', '--warmup', '0', '--flex')
    _assert_ok(proc)
    assert '6x10 = 60 queries' in proc.stdout
    diff = float(re.search(r'max \|flex - dat_det\| (\S+)', proc.stdout).group(1))
    assert diff < 1e-5
    for name in ('dat_det', 'bias only', 'SDPA without bias',
                 'FlexAttention, bias in score_mod'):
        assert re.search(rf'{name}: +[\d.]+ ms \(median CPU time\), [\d.]+x dat_det',
                         proc.stdout), name


def test_detector_benchmark_inductor_options():
    """--compile holds freezing (and on CPU fallback_random) unless told otherwise; a mode or
    another backend gets none, and a mode with options is refused."""
    from dat_det.engine.compile_options import benchmark_inductor_options, inductor_config
    from dat_det.utils.errors import UserInputError

    def options(device='cpu', **kwargs):
        return benchmark_inductor_options(device, **kwargs)

    assert options() == dict(freezing=True, fallback_random=True)
    assert options('cuda') == dict(freezing=True)  # Inductor's CUDA RNG is fast
    assert options(options=dict(freezing=False)) == dict(freezing=False)
    assert options(mode='max-autotune') == {}
    assert options(backend='aot_eager') == {}
    with pytest.raises(UserInputError, match='exclusive'):
        options(mode='max-autotune', options=dict(freezing=True))
    # the options hold while the models run and are restored afterwards
    import torch._inductor.config as inductor_config_module
    before = inductor_config_module.freezing
    with inductor_config(dict(freezing=not before)):
        assert inductor_config_module.freezing is (not before)
    assert inductor_config_module.freezing is before


def test_detector_benchmark_refuses_a_mode_with_options_in_one_line():
    proc = run_tool('analysis_tools/benchmark.py', 'any_config.py', '--compile',
                    '--compile-mode', 'max-autotune', '--compile-options', 'freezing=True')
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        'error: --compile-mode and --compile-options are exclusive (torch.compile takes a mode '
        'or options)')


@pytest.mark.filterwarnings('ignore')
def test_detector_benchmark_freezes_inference_graphs():
    """Held as the tool holds them, the options reach Inductor: a frozen inference graph keeps
    the weights it was compiled with (``torch.compile(options=...)`` would leave freezing
    off, and the graph would see the new weight)."""
    from dat_det.engine.compile_options import BENCHMARK_OPTIONS, inductor_config
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4)).eval()
    compiled = torch.compile(model)
    x = torch.randn(1, 4, 8, 8)
    with inductor_config(dict(BENCHMARK_OPTIONS)), torch.no_grad():
        first = compiled(x)
        model[0].weight.add_(1.0)
        torch.testing.assert_close(compiled(x), first)
    assert not torch.allclose(model(x), first)
    torch._dynamo.reset()
