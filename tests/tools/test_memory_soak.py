"""The memory soak script, short: it trains the demo model and reports the RSS growth.

The long run (2000 iterations, growth measured from iteration 200) is in docs/reliability.md.
"""
from __future__ import annotations

import json

from tests.helpers.tool_runs import run_tool


def test_memory_soak_short(tmp_path, tiny_shapes_root):
    out = tmp_path / 'soak.json'
    proc = run_tool('analysis_tools/memory_soak.py', '--iters', '40', '--start', '20',
                    '--every', '20', '--batch-size', '1', '--workers', '0', '--data-root',
                    str(tiny_shapes_root), '--max-growth', '25', '--json', str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'RSS of the training process:' in proc.stdout
    result = json.loads(out.read_text())
    assert [s['iter'] for s in result['samples']] == [1, 20, 40]
    assert result['rss_start_mib'] > 100 and result['ok']
    assert abs(result['rss_growth_pct']) <= 25
