"""FLOP counters (mmengine jit handles) for ops the default counters miss.

Convention of mmengine (and fvcore): one fused multiply-add counts as one FLOP, element-wise
ops (softmax, bias adds) count zero.

- Multi-scale deformable attention: every sample ``(b, q, head, level, point)`` bilinearly
  interpolates ``C`` channels (4 multiply-adds each) and adds them with its attention weight
  (1 more), so the op costs ``5 * B * Lq * heads * C * levels * points``. Traced, the op is
  one node of one of its registered names (:data:`dat_det.ops.TRACED_OP_NAMES`: the operator,
  or the private path of its ``gather`` / ``triton`` backend) or, for mmcv's CUDA op, a
  ``prim::PythonOp``; the default counters skip them.
- ``aten::scaled_dot_product_attention`` (DAT's deformable, window attention): ``Q K^T`` and
  ``A V`` cost ``B * heads * Lq * Lk * (E + Ev)``; the default counters skip it.
"""
from collections import Counter
from typing import Any, Callable, Dict, List, Sequence

from mmengine.analysis.jit_handles import get_shape

from dat_det.ops import TRACED_OP_NAMES as MSDA_OP_NAMES

Handle = Callable[[List[Any], List[Any]], Any]

MSDA_OP = 'msda'
SDPA_OP = 'scaled_dot_product_attention'


def msda_flops(value_shape: Sequence[int], locations_shape: Sequence[int]) -> int:
    """FLOPs of the multi-scale deformable attention op.

    Args:
        value_shape: ``(B, S, heads, C)``.
        locations_shape: sampling locations ``(B, Lq, heads, levels, points, 2)``.
    """
    batch, _, heads, channels = value_shape
    _, num_queries, _, levels, points, _ = locations_shape
    return 5 * batch * num_queries * heads * channels * levels * points


def sdpa_flops(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> int:
    """FLOPs of ``softmax(Q K^T) V``.

    Args:
        q_shape, k_shape, v_shape: ``(..., Lq, E)``, ``(..., Lk, E)``, ``(..., Lk, Ev)``;
            the leading dimensions of ``q`` count (k and v broadcast to them).
    """
    *lead, num_queries, dims = q_shape
    num_keys, value_dims = k_shape[-2], v_shape[-1]
    batch = 1
    for d in lead:
        batch *= d
    return batch * num_queries * num_keys * (dims + value_dims)


def msda_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Handle of the op traced as ``(value, spatial_shapes, level_start_index, locations,
    weights, ...)``."""
    return Counter({MSDA_OP: msda_flops(get_shape(inputs[0]), get_shape(inputs[3]))})


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Handle of ``aten::scaled_dot_product_attention(q, k, v, ...)``."""
    shapes = [get_shape(v) for v in inputs[:3]]
    return Counter({SDPA_OP: sdpa_flops(*shapes)})


def _python_op(name: str) -> str:
    return f'prim::PythonOp.{name}'


DAT_DET_OP_HANDLES: Dict[str, Handle] = {
    **{name: msda_flop_jit for name in MSDA_OP_NAMES},
    # mmcv's op on CUDA, for comparisons with mmdet's DeformableDETR
    _python_op('MultiScaleDeformableAttnFunction'): msda_flop_jit,
    'aten::scaled_dot_product_attention': sdpa_flop_jit,
}
