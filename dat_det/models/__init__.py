"""Registered dat_det models: importing this package registers ``DAT``, ``MSDADeformableDETR``,
``MSDADINO`` and ``WithDatDetMSDA`` in mmdet's registries, which is what
``custom_imports = dict(imports=['dat_det.models'])`` in a config is for. That needs mmdet.

``dat_det.models.layers`` holds the plain ``nn.Module`` building blocks; they need torch and
``timm.layers`` only. Python imports this package before its ``layers``, so without mmdet
this package does not fail outright: it fails where the registered pieces are asked for, by
name (``from dat_det.models import DAT``) or by a config (``custom_imports`` runs inside
mmengine, so an import in a process that has loaded mmengine raises).
"""
import importlib.util
import sys

_REGISTERED = ('DAT', 'MSDADeformableDETR', 'MSDADINO', 'DatDetMSDA', 'use_dat_det_msda',
               'with_dat_det_msda')
_NO_MMDET = ('dat_det.models registers DAT, MSDADeformableDETR, MSDADINO and WithDatDetMSDA '
             "in mmdet's registries, but mmdet is not installed (tools/install.sh installs "
             'it); dat_det.models.layers has the plain modules, which need torch and timm only')

if importlib.util.find_spec('mmdet') is not None:
    from .registered import *  # noqa: F401,F403
elif sys.modules.get('mmengine') is not None:
    raise ImportError(_NO_MMDET)
else:
    def __getattr__(name: str):
        if name in _REGISTERED:
            raise ImportError(_NO_MMDET)
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
