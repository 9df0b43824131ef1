"""Plain ``nn.Module`` building blocks (torch, timm.layers; no registry).

``DAttention`` is DAT's deformable attention as a plug-in block for any CNN.
"""
from .dattention import DAttention

__all__ = ['DAttention']
