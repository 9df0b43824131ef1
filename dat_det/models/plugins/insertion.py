"""Insert DAttention blocks into any built mmdet model by declaration (``WithDAttention``).

Wrap the model config and name where the blocks go, by module path::

    _base_ = 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'
    custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)
    model = dict(_delete_=True, type='WithDAttention', model={{_base_.model}},
                 insert=[dict(before='backbone.stage4.1')],     # before RTMDet's SPP block
                 defaults=dict(zero_init=True))

Each entry of ``insert`` has exactly one of

- ``after=PATH``: the block transforms the output of the module at ``PATH``;
- ``before=PATH``: the block transforms the first positional input of that module;

plus, optionally, ``index`` (an int or a list of ints: for a module whose output / first
input is a tuple or list of maps, e.g. ``after='neck', index=[1, 2]`` puts one block on each
of the neck's levels 1 and 2, right before the head), ``in_channels`` (when the probe below
does not reach the module) and any :class:`~dat_det.models.layers.DAttention` option, which
override ``defaults``. ``PATH`` is a dotted module name whose components may be shell
patterns (``'neck.top_down_blocks.*'``, ``'backbone.stage3.1.blocks.[02]'``); each
component matches one name component, and a path that matches nothing is an error.

The blocks are built at the input channels of their site, found by one probe run of the
model's ``extract_feat`` (backbone and neck) on a zero image of ``probe_size`` in eval mode
without gradients, and held in ``model.dattention`` (an mmengine ``ModuleDict``; one key per
site, e.g. ``backbone_stage4_1__input``, ``neck_top_down_blocks_0``, ``neck__out1``). They
run through forward hooks of the sites (PyTorch's declared extension point: no method of
the model is replaced), so the model's own modules, forward and state-dict keys are those of
the original: its checkpoints load with only ``dattention.*`` keys missing. Hooks run under
``torch.jit.trace`` (ONNX, FLOP counting) and ``torch.compile``, and are kept, pointing to
the copied blocks, by ``copy.deepcopy`` (EMA models).
"""
from __future__ import annotations

import copy
import fnmatch
import inspect
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.registry import MODELS
from mmengine.model import ModuleDict
from torch import nn

from dat_det.models.layers.dattention import DAttention

from .dattention import DAttentionPlugin

HOLDER = 'dattention'
SITE_KEYS = ('after', 'before', 'index', 'in_channels')


@dataclass(frozen=True)
class Site:
    """One insertion: the block ``name`` in ``model.dattention`` acts on the output
    (``where='after'``) or first input (``'before'``) of ``module_path``, on its element
    ``index`` when that is a tuple or list."""

    name: str
    module_path: str
    where: str
    index: Optional[int]


class _TransformOutput:
    """Forward hook: the module's output (or its element ``index``) through ``block``."""

    def __init__(self, block: nn.Module, index: Optional[int]) -> None:
        self.block, self.index = block, index

    def __call__(self, module: nn.Module, args: Tuple[Any, ...], output: Any) -> Any:
        return _apply(self.block, output, self.index)


class _TransformInput:
    """Forward pre-hook: the module's first positional input (or its element ``index``)
    through ``block``."""

    def __init__(self, block: nn.Module, index: Optional[int]) -> None:
        self.block, self.index = block, index

    def __call__(self, module: nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
        return (_apply(self.block, args[0], self.index), *args[1:])


def _apply(block: nn.Module, value: Any, index: Optional[int]) -> Any:
    if index is None:
        return block(value)
    items = list(value)
    items[index] = block(items[index])
    return type(value)(items) if isinstance(value, tuple) else items


def _component_match(pattern: str, name: str) -> bool:
    parts, pattern_parts = name.split('.'), pattern.split('.')
    return len(parts) == len(pattern_parts) and all(
        fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pattern_parts))


def match_modules(model: nn.Module, pattern: str) -> List[str]:
    """Names of the modules of ``model`` that ``pattern`` matches (component by component),
    in registration order.

    Raises:
        ValueError: nothing matches (the message lists the children of the longest
            matching prefix).
    """
    names = [name for name, _ in model.named_modules() if name]
    found = [name for name in names if _component_match(pattern, name)]
    if found:
        return found
    parts = pattern.split('.')
    for depth in range(len(parts) - 1, -1, -1):
        prefix = '.'.join(parts[:depth])
        parents = [''] if not prefix else [n for n in names if _component_match(prefix, n)]
        if parents:
            children = sorted({n.split('.')[depth] for n in names
                               if n.count('.') == depth
                               and any(n.startswith(p + '.') or not p for p in parents)})
            where = f"under '{prefix}'" if prefix else 'at the top'
            raise ValueError(f"no module matches '{pattern}'; {where} there are: "
                             f"{', '.join(children[:20])}")
    raise ValueError(f"no module matches '{pattern}'")  # pragma: no cover


def _site_name(module_path: str, where: str, index: Optional[int]) -> str:
    name = module_path.replace('.', '_')
    if index is not None:
        name += f'__out{index}' if where == 'after' else f'__in{index}'
    elif where == 'before':
        name += '__input'
    return name


_BLOCK_OPTIONS = set(inspect.signature(DAttention.__init__).parameters) - {'self'}


def _parse(spec: dict) -> Tuple[str, str, List[Optional[int]], Optional[int], dict]:
    spec = dict(spec)
    wheres = [k for k in ('after', 'before') if k in spec]
    if len(wheres) != 1:
        raise ValueError(f'each insert entry needs exactly one of after= / before=, got {spec}')
    where = wheres[0]
    pattern = spec.pop(where)
    index = spec.pop('index', None)
    indices = list(index) if isinstance(index, (list, tuple)) else [index]
    in_channels = spec.pop('in_channels', None)
    unknown = sorted(set(spec) - _BLOCK_OPTIONS)
    if unknown:
        raise ValueError(f'unknown insert options {unknown}; valid: {sorted(SITE_KEYS)} and '
                         f'the DAttention options {sorted(_BLOCK_OPTIONS - {"in_channels"})}')
    return where, pattern, indices, in_channels, spec


def _probe_channels(model: nn.Module, sites: Sequence[Site],
                    probe_size: Tuple[int, int]) -> Dict[str, int]:
    """Channels of the map at each site, from one run of ``extract_feat`` (else ``forward``)
    on a zero image."""
    seen: Dict[str, int] = {}

    def record(site: Site, value: Any) -> None:
        item = value if site.index is None else list(value)[site.index]
        if not isinstance(item, torch.Tensor) or item.dim() != 4:
            what = tuple(item.shape) if isinstance(item, torch.Tensor) else type(item).__name__
            hint = '' if site.index is not None else '; give index= for a tuple of maps'
            raise ValueError(f"DAttention needs a (B, C, H, W) map {site.where} "
                             f"'{site.module_path}', found {what}{hint}")
        seen[site.name] = int(item.shape[1])

    handles = []
    for site in sites:
        module = model.get_submodule(site.module_path)
        if site.where == 'after':
            handles.append(module.register_forward_hook(
                lambda m, a, out, site=site: record(site, out)))
        else:
            handles.append(module.register_forward_pre_hook(
                lambda m, a, site=site: record(site, a[0])))
    was_training = model.training
    run = getattr(model, 'extract_feat', model)
    try:
        model.eval()
        with torch.no_grad():
            run(torch.zeros(1, 3, *probe_size))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return seen


def insert_dattention(model: nn.Module, insert: Sequence[dict],
                      defaults: Optional[dict] = None,
                      probe_size: Sequence[int] = (64, 64)) -> nn.Module:
    """Add DAttention blocks to ``model`` in place at the sites of ``insert`` (see the module
    docstring); returns ``model``.

    Raises:
        ValueError: a bad entry, a path that matches nothing, a site whose value is not a
            ``(B, C, H, W)`` map, two entries on the same site, or a site the probe does not
            reach without ``in_channels``.
    """
    if not insert:
        raise ValueError('WithDAttention needs at least one insert entry')
    defaults = dict(defaults or {})
    unknown = sorted(set(defaults) - (_BLOCK_OPTIONS - {'in_channels'}))
    if unknown:
        raise ValueError(f'unknown DAttention defaults {unknown}; valid: '
                         f'{sorted(_BLOCK_OPTIONS - {"in_channels"})}')
    holder = getattr(model, HOLDER, None)
    if holder is None:
        holder = ModuleDict()
        holder.sites = []
    elif not isinstance(holder, ModuleDict) or not hasattr(holder, 'sites'):
        raise ValueError(f'{type(model).__name__} already has an attribute {HOLDER!r}')
    planned: List[Tuple[Site, Optional[int], dict]] = []
    taken = set(holder.keys())
    for spec in insert:
        where, pattern, indices, in_channels, options = _parse(spec)
        for path in match_modules(model, pattern):
            for index in indices:
                site = Site(_site_name(path, where, index), path, where, index)
                if site.name in taken:
                    raise ValueError(f"two DAttention blocks {where} '{path}'"
                                     f"{'' if index is None else f' index {index}'}")
                taken.add(site.name)
                planned.append((site, in_channels, {**defaults, **options}))
    missing = [site for site, channels, _ in planned if channels is None]
    probed = _probe_channels(model, missing, tuple(probe_size)) if missing else {}
    for site, channels, options in planned:
        channels = channels if channels is not None else probed.get(site.name)
        if channels is None:
            raise ValueError(f"'{site.module_path}' does not run in extract_feat; give its "
                             'in_channels in the insert entry')
        block = DAttentionPlugin(channels, **options)
        holder[site.name] = block
        holder.sites.append(site)
        module = model.get_submodule(site.module_path)
        if site.where == 'after':
            module.register_forward_hook(_TransformOutput(block, site.index))
        else:
            module.register_forward_pre_hook(_TransformInput(block, site.index))
    if getattr(model, HOLDER, None) is None:
        model.add_module(HOLDER, holder)
    return model


@MODELS.register_module(name='WithDAttention')
def with_dattention(model: dict, insert: Sequence[dict], defaults: Optional[dict] = None,
                    probe_size: Sequence[int] = (64, 64)) -> nn.Module:
    """Build the mmdet ``model`` config and insert DAttention blocks at the sites of
    ``insert`` (see :func:`insert_dattention`).

    Args:
        model: any mmdet model config (``type='RTMDet'``, ``'YOLOX'``, ...).
        insert: the sites (module docstring).
        defaults: DAttention options of every block, overridden per entry.
        probe_size: (H, W) of the zero image that finds each site's channels.

    Returns:
        The built model itself (not a wrapper), with the blocks in ``model.dattention``.
    """
    return insert_dattention(MODELS.build(copy.deepcopy(model)), insert, defaults, probe_size)


def dattention_sites(model: nn.Module) -> List[Site]:
    """The sites inserted into ``model`` by :func:`insert_dattention` (empty if none)."""
    holder = getattr(model, HOLDER, None)
    return list(getattr(holder, 'sites', []))


__all__ = ['Site', 'dattention_sites', 'insert_dattention', 'match_modules', 'with_dattention']
