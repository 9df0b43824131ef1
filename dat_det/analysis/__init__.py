"""Model complexity: parameters and FLOPs with counters for dat_det's attention ops."""
from .complexity import ComplexityReport, TensorForward, analyze_complexity, detector_complexity
from .flop_handles import DAT_DET_OP_HANDLES, msda_flops, sdpa_flops

__all__ = ['ComplexityReport', 'TensorForward', 'analyze_complexity', 'detector_complexity',
           'DAT_DET_OP_HANDLES', 'msda_flops', 'sdpa_flops']
