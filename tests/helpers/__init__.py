"""What several test modules share, imported from here and never from a ``test_*`` module:

- ``tool_runs``: run a script under ``tools/`` as a subprocess; ``forked_runs``: run one in a
  forked child of the test process (cheaper: torch and mmdet are already imported);
- ``tiny_configs``: tiny DAT + Deformable DETR / DINO configs on the shapes data, random
  checkpoints; ``demo_training``: the FCOS demo config pointed at the tiny shapes set, and
  checkpoint reading and comparison;
- ``kill_points``, ``probe_hooks``: hooks that training runs import through ``custom_imports``
  (SIGKILL at a chosen point, a NaN loss, the dtype that reaches the op);
- ``msda_inputs``: inputs, cases and mmcv's reference for the deformable attention op;
  ``msda_checks``: opcheck and equality to mmcv of one backend;
- ``dat_checks``: DAT layers against the reference written from the equations;
  ``dat_builders``: the registered DAT backbone and its reference at small settings;
- ``detr_builders``: tiny ResNet Deformable DETR / DINO configs in mmdet's schema and batches;
- ``dat_detection_official``: facts about DAT-Detection's published detectors
  (``data/dat_detection_official_keys.json``) and checkpoints laid out as theirs.
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
