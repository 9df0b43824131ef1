"""Parameters, FLOPs and activations of a model with mmengine's jit analysis."""
from dataclasses import dataclass
from typing import Any, Dict, Tuple

from mmengine.analysis import ActivationAnalyzer, FlopAnalyzer, parameter_count
from mmengine.analysis.print_helper import complexity_stats_table
from torch import nn

from .flop_handles import DAT_DET_OP_HANDLES


@dataclass
class ComplexityReport:
    """Totals of one analysis, plus the tables and what was not counted."""

    flops: int
    activations: int
    params: int
    by_operator: Dict[str, int]
    unsupported_ops: Dict[str, int]
    table: str


def flop_analyzer(model: nn.Module, inputs: Tuple[Any, ...]) -> FlopAnalyzer:
    """mmengine's :class:`FlopAnalyzer` with dat_det's op handles, quiet about the rest."""
    analyzer = FlopAnalyzer(model, inputs).set_op_handle(**DAT_DET_OP_HANDLES)
    return analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)


def analyze_complexity(model: nn.Module, inputs: Tuple[Any, ...],
                       max_depth: int = 3) -> ComplexityReport:
    """Trace ``model(*inputs)`` once for FLOPs and once for activations.

    Args:
        model: in eval mode; its ``forward`` receives ``inputs``.
        inputs: positional inputs of ``forward``.
        max_depth: depth of the per-module table.
    """
    flops = flop_analyzer(model, inputs)
    activations = ActivationAnalyzer(model, inputs).unsupported_ops_warnings(False) \
        .uncalled_modules_warnings(False)
    total = flops.total()
    table = complexity_stats_table(flops=flops, activations=activations,
                                   max_depth=max_depth, show_param_shapes=False)
    return ComplexityReport(
        flops=total, activations=activations.total(), params=parameter_count(model)[''],
        by_operator=dict(flops.by_operator()), unsupported_ops=dict(flops.unsupported_ops()),
        table=table)


class TensorForward(nn.Module):
    """A detector's tensor-mode forward (backbone to the head's raw outputs, no
    post-processing) as the ``forward`` of a module of its own, which is what the jit-based
    counters trace: ``forward(inputs)`` is ``detector(inputs, data_samples, mode='tensor')``.

    The detector is a child module (named ``detector`` in the tables); nothing of it is
    changed.
    """

    def __init__(self, detector: nn.Module, data_samples: Any) -> None:
        super().__init__()
        self.detector = detector
        self.data_samples = data_samples

    def forward(self, inputs: Any) -> Any:
        return self.detector(inputs, self.data_samples, mode='tensor')


def detector_complexity(model: nn.Module, inputs: Any, data_samples: Any,
                        max_depth: int = 3) -> ComplexityReport:
    """Complexity of ``model``'s tensor-mode forward (backbone to head outputs) on a batch;
    the table shows ``max_depth`` levels of the detector's modules."""
    return analyze_complexity(TensorForward(model, data_samples), (inputs, ),
                              max_depth=max_depth + 1)
