"""Loading of official (third-party layout) checkpoints into dat_det modules, and the
state-dict key mappings of Deformable DETR to and from mmdet and the official release."""
from .dat_detection import (
    checkpoint_classes,
    convert_dat_detection,
    load_dat_detection,
    match_to_model,
    rename_dat_detection_key,
)
from .dat_official import (
    CheckpointMismatchError,
    LoadReport,
    convert_official_checkpoint,
    convert_official_dat_keys,
    extract_state_dict,
    load_official_dat,
    match_official_state_dict,
    resize_position_tables,
    select_prefix,
)
from .deformable_detr_keys import from_mmdet, from_official, to_mmdet

__all__ = ['CheckpointMismatchError', 'LoadReport', 'convert_official_checkpoint',
           'convert_official_dat_keys', 'extract_state_dict', 'load_official_dat',
           'match_official_state_dict', 'resize_position_tables', 'select_prefix',
           'from_mmdet', 'to_mmdet', 'from_official',
           'checkpoint_classes', 'convert_dat_detection', 'load_dat_detection',
           'match_to_model', 'rename_dat_detection_key']
