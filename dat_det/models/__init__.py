"""Registered dat_det models.

``dat_det.models.layers`` holds plain ``nn.Module`` building blocks that import torch (and
einops) only. The registered pieces below need mmdet; they are imported only when mmdet is
installed, so that the layers stay usable on a machine with torch alone.
"""
import importlib.util

if importlib.util.find_spec('mmdet') is not None:
    from .registered import *  # noqa: F401,F403
