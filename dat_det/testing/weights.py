"""Weights for comparing a dat_det module with a reference implementation: random values off
the init, and a copy from one module into the other."""
from typing import Sequence

import torch
from torch import nn

# Buffers that dat_det recomputes from the configuration instead of loading them.
DERIVED_BUFFERS = ('relative_position_index', 'attn_mask')


def randomize_parameters(module: nn.Module, seed: int = 1, scale: float = 0.2) -> None:
    """Every parameter of ``module`` set to ``N(0, scale^2)`` from ``seed`` (zero-initialised
    tables and offsets would hide indexing bugs)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * scale)


def copy_weights(src: nn.Module, dst: nn.Module,
                 skip: Sequence[str] = DERIVED_BUFFERS) -> None:
    """Load ``src``'s state, less the entries whose last name component is in ``skip``, into
    ``dst``; every name must then match exactly.

    Raises:
        ValueError: a name of one module is missing in the other.
    """
    state = {k: v for k, v in src.state_dict().items() if k.rsplit('.', 1)[-1] not in skip}
    result = dst.load_state_dict(state, strict=False)
    if result.unexpected_keys or result.missing_keys:
        raise ValueError(f'state dicts differ: missing {result.missing_keys[:5]}, unexpected '
                         f'{result.unexpected_keys[:5]}')
