"""Run ``triton_interpreter_cases.py`` in a subprocess with ``TRITON_INTERPRET=1``."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('triton')

from tests.helpers import REPO_ROOT

CASES = Path(__file__).with_name('triton_interpreter_cases.py')


def test_triton_kernels_in_interpreter_mode():
    env = dict(os.environ, TRITON_INTERPRET='1')
    env.pop('DAT_DET_MSDA_BACKEND', None)
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-rs', str(CASES)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert 'skipped' not in result.stdout.splitlines()[-1], result.stdout[-3000:]
