"""Shared fixtures: a tiny generated shapes dataset and helpers to run the command-line tools."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dat_det.datasets import ShapesConfig, generate_shapes_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def tiny_shapes_root(tmp_path_factory) -> Path:
    """A generated shapes dataset with 8 train and 4 val images of 64-96 px."""
    root = tmp_path_factory.mktemp('shapes')
    generate_shapes_dataset(root, ShapesConfig(num_train=8, num_val=4, min_size=64, max_size=96,
                                               min_object=16, max_object=40, seed=1))
    return root


def run_tool(script: str, *args: str, timeout: float = 600,
             launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run ``tools/<script>`` with this interpreter from the repository root."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    env.pop('DAT_DET_DEBUG', None)
    cmd = [*(launcher or [sys.executable]), str(REPO_ROOT / 'tools' / script), *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
