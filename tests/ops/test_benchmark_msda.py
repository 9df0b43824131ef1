"""Smoke test of ``tools/analysis_tools/benchmark_msda.py`` at a tiny scale (no timings)."""
import json
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

SCRIPT = REPO_ROOT / 'tools' / 'analysis_tools' / 'benchmark_msda.py'
ARGS = ['--device', 'cpu', '--scale', '25', '--repeat', '1', '--warmup', '0']
# runs the script as __main__ with mmcv made unimportable
WITHOUT_MMCV = ("import runpy, sys; sys.modules['mmcv'] = None; sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")


def _run(tmp_path, *prefix):
    out = tmp_path / 'result.json'
    result = subprocess.run([sys.executable, *prefix, str(SCRIPT), *ARGS, '--json', str(out)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, json.loads(out.read_text())


def test_benchmark_reports_every_backend_with_small_errors(tmp_path):
    pytest.importorskip('mmcv.ops.multi_scale_deform_attn')
    stdout, report = _run(tmp_path)
    assert 'device:' in stdout
    rows = report['results']
    assert {(r['shape'], r['backend']) for r in rows} >= {
        (shape, backend) for shape in ('encoder', 'decoder')
        for backend in ('pytorch', 'gather', 'mmcv_pytorch')}
    for row in rows:
        assert 'error' not in row, row
        assert max(row['rel_err'].values()) < 1e-4, row
        assert row['peer'] == 'mmcv_pytorch' and row['fwd_bwd_speedup'] > 0


def test_benchmark_runs_without_mmcv(tmp_path):
    _, report = _run(tmp_path, '-c', WITHOUT_MMCV)
    backends = {r['backend'] for r in report['results']}
    assert {'pytorch', 'gather'} <= backends and not any('mmcv' in b for b in backends)
