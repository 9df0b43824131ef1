"""The registered DAT backbone and the reference written from the equations
(``dat_det.testing.dat_reference``) at the ``SMALL`` settings of the DAT checks: the presets'
block types and options with fewer channels and blocks."""
from functools import partial

from mmdet.registry import MODELS

import dat_det.models  # noqa: F401  (registers DAT)
from dat_det.models.layers.dat import resolve_arch
from dat_det.testing.dat_reference import DATReference
from dat_det.testing.weights import randomize_parameters
from tests.helpers.dat_checks import SMALL

# weights moved off their init (both sides of a comparison get the same call)
randomize_backbone = partial(randomize_parameters, seed=3, scale=0.1)


def build_dat(arch: str = 'dat++-t', small: bool = True, **kwargs):
    """The registered ``DAT`` of preset ``arch`` (its ``SMALL`` variant unless ``small`` is
    False) with ``kwargs`` on top, drop path off unless given."""
    overrides = dict(SMALL[arch]) if small else {}
    overrides.update(kwargs)
    overrides.setdefault('drop_path_rate', 0.0)
    return MODELS.build(dict(type='DAT', arch=arch, **overrides))


def reference_from_small(arch, img_size=224, small=True, layout='classification',
                         out_indices=(0, 1, 2, 3), details=None, **overrides):
    """The reference model of the preset (its formulation's details), small settings."""
    fields = dict(SMALL[arch]) if small else {}
    fields.update(overrides)
    return DATReference(resolve_arch(arch, **fields), img_size=img_size, layout=layout,
                        out_indices=out_indices, details=details)
