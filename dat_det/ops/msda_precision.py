"""Precision of multi-scale deformable attention, the same for every backend: computation in
float32, float64 when any input is float64; the output in the dtype of ``value`` (float64 in
the float64 case); gradients in each input's dtype."""
import torch
from torch import Tensor


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 when any of ``tensors`` is, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def output_dtype(value: Tensor, compute: torch.dtype) -> torch.dtype:
    """The output's dtype for ``value`` computed in ``compute``."""
    return torch.float64 if compute == torch.float64 else value.dtype
