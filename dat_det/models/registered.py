"""Imports every module that registers into mmdet's registries (needs mmdet)."""
from .backbones import DAT

__all__ = ['DAT']
