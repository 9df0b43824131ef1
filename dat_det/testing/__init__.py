"""Test oracles, as ``mmdet.testing``: literal ports of the official DAT releases.

``dat_official`` ports the DAT++ release (L, S, N, D blocks; N as a naive loop with natten's
semantics), ``dat_v1_official`` the DAT v1 release (CVPR 2022). Tests and
``tools/analysis_tools/benchmark_backbone.py`` compare dat_det's ``DAT`` against them. They are
kept literal on purpose and are no part of the models: nothing under ``dat_det.models``
imports them. They need ``einops`` (and ``timm`` for the v1 port). ``weights`` moves a
module's parameters off their init and copies them into the module compared with it.
"""
