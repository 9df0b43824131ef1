"""Loading of official (third-party layout) checkpoints into dat_det modules."""
from .dat_official import (
                           convert_official_dat_keys,
                           extract_state_dict,
                           load_official_dat,
                           resize_position_tables,
)

__all__ = ['convert_official_dat_keys', 'extract_state_dict', 'load_official_dat',
           'resize_position_tables']
