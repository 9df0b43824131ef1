"""Custom ops: multi-scale deformable attention (see :mod:`dat_det.ops.msda`)."""
from .msda import (
                   BACKEND_ENV_VAR,
                   BACKENDS,
                   available_backends,
                   multi_scale_deformable_attn,
                   resolve_backend,
)

__all__ = [
    'multi_scale_deformable_attn', 'available_backends', 'resolve_backend', 'BACKENDS',
    'BACKEND_ENV_VAR'
]
