"""Custom ops: multi-scale deformable attention (see :mod:`dat_det.ops.msda_op`)."""
from .msda_op import (
    BACKEND_ALIASES,
    BACKEND_ENV_VAR,
    BACKENDS,
    OP_NAME,
    TRACED_OP_NAMES,
    SpatialShapes,
    available_backends,
    level_layout,
    level_sizes,
    multi_scale_deformable_attn,
    resolve_backend,
)

__all__ = [
    'multi_scale_deformable_attn', 'available_backends', 'resolve_backend', 'BACKENDS',
    'BACKEND_ALIASES', 'BACKEND_ENV_VAR', 'OP_NAME', 'TRACED_OP_NAMES', 'SpatialShapes',
    'level_layout', 'level_sizes'
]
