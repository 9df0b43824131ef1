"""An identity submodule where an attention module shows intermediate tensors to observers.

Attention modules call their probe on the tensors that say where (and how much) they sample,
and continue with what it returns. The probe returns its inputs unchanged, so it costs
nothing and traces away under ``torch.compile``; a forward hook on it sees the tensors
exactly as the module uses them::

    handle = attn.sampling_probe.register_forward_hook(
        lambda probe, args, out: seen.append(args))

This is the declared extension point for pictures, statistics or tests: no function of the
module is replaced while it runs.
"""
from typing import Tuple

import torch
from torch import Tensor, nn


class Probe(nn.Module):
    """Identity: ``forward(*tensors)`` returns ``tensors`` (a tuple). No parameters, so it
    adds no state-dict keys. The owning module documents what it passes."""

    # TorchScript takes no variadic forward: compiled owners skip their probe (no hooks there)
    @torch.jit.unused
    def forward(self, *tensors: Tensor) -> Tuple[Tensor, ...]:
        return tensors
