"""DAttention as a plug-in for mmdet detectors: the registered block (ResNet ``plugins``) and
``WithDAttention`` (insertion by module path into any model)."""
from .dattention import DAttentionPlugin
from .insertion import Site, dattention_sites, insert_dattention, match_modules, with_dattention

__all__ = ['DAttentionPlugin', 'Site', 'dattention_sites', 'insert_dattention', 'match_modules',
           'with_dattention']
