"""Test oracles, as ``mmdet.testing``; no part of the models (nothing under ``dat_det.models``
imports them).

``dat_reference`` is a DAT / DAT++ written from the equations of the papers, one head at a time
with explicit sampling taps, under the official parameter names (its switches select the v1 or
DAT++ formulation detail by detail); ``natten_reference`` is natten's neighbourhood attention one
query at a time; ``weights`` moves a module's parameters off their init and copies them into the
module compared with it.
"""
