"""Imports every module that registers into mmdet's registries (needs mmdet)."""
from .detectors.deformable_detr import MSDADeformableDETR  # noqa: F401
from .backbones import DAT  # noqa: F401
