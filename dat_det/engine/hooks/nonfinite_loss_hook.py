"""Stop (or skip the batch) when a training loss is not finite, before the weights take it."""
from __future__ import annotations

import math
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS

from dat_det.utils.errors import RunStopped


class NonFiniteLossError(RunStopped):
    """Training stopped on a loss (or gradient) that is NaN or infinite."""


def _finite_values(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value.detach().float().sum()]
    if isinstance(value, (list, tuple)):
        return [t.detach().float().sum() for t in value if isinstance(t, torch.Tensor)]
    return []


def nonfinite_terms(losses: dict) -> dict[str, float]:
    """The entries of a loss dict that hold a NaN or an infinity, as floats."""
    sums = {k: _finite_values(v) for k, v in losses.items()}
    sums = {k: torch.stack(v).sum() for k, v in sums.items() if v}
    if not sums or bool(torch.isfinite(torch.stack(list(sums.values()))).all()):
        return {}
    return {k: float(v) for k, v in sums.items() if not math.isfinite(float(v))}


def _grads_finite(grads: list[torch.Tensor]) -> bool:
    norms = torch._foreach_norm(grads) if hasattr(torch, '_foreach_norm') else [
        torch.linalg.vector_norm(g) for g in grads]
    return bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Guard every optimizer step against NaN/inf losses and gradients.

    A forward hook on the model reads the loss dict of each training forward, and an optimizer
    step pre-hook drops the gradients (so the step changes nothing, weight decay and momentum
    included) when a loss term or a gradient is not finite. Then, after the iteration:

    - ``action='stop'`` (default): raise :class:`NonFiniteLossError` naming the iteration and
      the non-finite terms. Nothing more is saved, so the last checkpoint on disk stays the last
      good one. ``tools/train.py`` prints it as one line.
    - ``action='skip'``: log a warning with the number of batches skipped so far (also kept in
      the message hub as ``nonfinite_skipped``, so it survives a resume), drop the non-finite
      entries from the logged values, and go on.

    With fp16 loss scaling, an overflowing step that the grad scaler skips on its own (finite
    loss, inf gradients) is the scaler's business and is not reported.
    """

    priority = 'HIGHEST'  # before RuntimeInfoHook logs the values and CheckpointHook saves

    def __init__(self, action: str = 'stop') -> None:
        if action not in ('stop', 'skip'):
            raise ValueError(f"NonFiniteLossHook action must be 'stop' or 'skip', got {action!r}")
        self.action = action
        self.skipped = 0
        self._bad_terms: dict[str, float] = {}
        self._bad_step = False
        self._handles: list = []

    def before_train(self, runner) -> None:
        self.skipped = int(runner.message_hub.get_info('nonfinite_skipped', 0) or 0)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self._handles.append(model.register_forward_hook(self._check_losses, with_kwargs=True))
        wrappers = (runner.optim_wrapper.values()
                    if isinstance(runner.optim_wrapper, OptimWrapperDict)
                    else [runner.optim_wrapper])
        for wrapper in wrappers:
            self._handles.append(wrapper.optimizer.register_step_pre_hook(self._guard_step))

    def after_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self.skipped:
            runner.logger.warning(f'{self.skipped} batches with a non-finite loss were skipped')

    def _check_losses(self, module, args, kwargs, output) -> None:
        if module.training and kwargs.get('mode') == 'loss' and isinstance(output, dict):
            self._bad_terms.update(nonfinite_terms(output))

    def _guard_step(self, optimizer, args, kwargs) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group['params']
                 if p.grad is not None]
        if not grads:
            return
        if self._bad_terms or not _grads_finite(grads):
            self._bad_step = True
            for group in optimizer.param_groups:
                for p in group['params']:
                    p.grad = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        bad_terms, bad_step = self._bad_terms, self._bad_step
        self._bad_terms, self._bad_step = {}, False
        if isinstance(outputs, dict):
            bad_terms.update(nonfinite_terms(outputs))
        if not bad_terms and not bad_step:
            return
        if len(bad_terms) > 1:
            bad_terms.pop('loss', None)  # the sum of the others: name the culprits
        iteration = runner.iter + 1
        what = (', '.join(f'{k}={v}' for k, v in sorted(bad_terms.items())) if bad_terms
                else 'finite loss but non-finite gradients')
        if self.action == 'stop':
            last = runner.message_hub.get_info('last_ckpt')
            raise NonFiniteLossError(
                f'non-finite loss at iteration {iteration}: {what}; training stopped before '
                f'this step changed the weights; last checkpoint: {last or "none saved yet"}')
        self.skipped += 1
        runner.message_hub.update_info('nonfinite_skipped', self.skipped)
        if isinstance(outputs, dict):
            for key in [k for k, v in outputs.items() if nonfinite_terms({k: v})]:
                outputs.pop(key)
        runner.logger.warning(f'iteration {iteration}: non-finite loss ({what}); batch skipped '
                              f'without changing the weights ({self.skipped} skipped so far)')
