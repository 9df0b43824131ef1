"""Run a script under ``tools/`` as a program (``__main__``) in a forked child of the test
process: like a subprocess (its own pid, can be SIGKILLed, exit status), without paying the ~4 s
of importing torch/mmdet again. Nothing of the script is imported into the test process."""
from __future__ import annotations

import os
import runpy
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

import dat_det.engine  # noqa: F401  (imported once in the parent, shared by every child)
from tests.helpers import REPO_ROOT


@dataclass
class Finished:
    returncode: int  # negative: killed by that signal
    output: str      # stdout and stderr together


def run_forked(script: str, *args: str, log: Path, env: dict | None = None) -> Finished:
    """Run ``tools/<script>`` with ``args`` in a fork; its output goes to ``log``."""
    for mod in ('mmdet.models', 'mmdet.datasets', 'mmdet.evaluation', 'mmengine.runner'):
        __import__(mod)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 1
        try:
            out = open(log, 'w', buffering=1)
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            sys.stdout = sys.stderr = out
            os.environ.update(env or {})
            os.environ.pop('DAT_DET_DEBUG', None)
            torch.set_num_threads(1)
            os.chdir(REPO_ROOT)
            sys.argv = [script, *args]
            runpy.run_path(str(REPO_ROOT / 'tools' / script), run_name='__main__')
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None
                                                                   else 1)
        except BaseException:  # noqa: BLE001 - reported through the exit status and log
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return Finished(code, log.read_text())
