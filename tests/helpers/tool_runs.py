"""Run a script under ``tools/`` as a program in a subprocess, as a user would."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO_ROOT


def run_tool(script: str, *args: str, timeout: float = 600,
             launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run ``tools/<script>`` with this interpreter from the repository root."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    env.pop('DAT_DET_DEBUG', None)
    cmd = [*(launcher or [sys.executable]), str(REPO_ROOT / 'tools' / script), *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
