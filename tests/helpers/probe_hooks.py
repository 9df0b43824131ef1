"""Test-only hooks imported through custom_imports: inject a NaN loss, record the dtype that
reaches the deformable attention op."""
from __future__ import annotations

import sys

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class NaNInjectHook(Hook):
    """Multiplies loss ``term`` by NaN in the forward of training iteration ``iteration``."""

    def __init__(self, iteration: int, term: str = 'loss_cls') -> None:
        self.iteration, self.term = iteration, term

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model

        def inject(module, args, kwargs, output):
            if (kwargs.get('mode') == 'loss' and runner.iter + 1 == self.iteration
                    and isinstance(output, dict)):
                output[self.term] = output[self.term] * float('nan')
            return output

        # prepend: the loss dict is poisoned before any other hook looks at it
        model.register_forward_hook(inject, with_kwargs=True, prepend=True)


@HOOKS.register_module()
class MSDADtypeProbeHook(Hook):
    """Prints, once, the dtype of ``value`` handed to the deformable attention op in training
    (the output of the attention module's ``value_proj``) and whether autocast was on."""

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self.seen = False
        for name, module in model.named_modules():
            if name.endswith('value_proj') and 'attn' in name:
                module.register_forward_hook(self._record)

    def _record(self, module, args, output) -> None:
        if module.training and not self.seen:
            self.seen = True
            print(f'MSDA value dtype={output.dtype} autocast='
                  f'{torch.is_autocast_enabled("cpu")}', file=sys.stderr, flush=True)
