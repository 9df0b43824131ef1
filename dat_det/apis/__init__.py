"""High-level inference helpers (as ``mmdet.apis``): load a detector, prepare its inputs."""
from .inference import load_detector, prepare_image, preprocess

__all__ = ['load_detector', 'prepare_image', 'preprocess']
