"""dat_det: deformable-attention detectors on OpenMMLab 3.x."""
__version__ = '0.1.0'
