"""Export of dat_det detectors to ONNX (see :mod:`.deformable_detr_onnx`)."""
from .deformable_detr_onnx import (
    DeformableDETRForExport,
    detector_outputs,
)
from .onnx_check import compare_with_onnxruntime, export_onnx
from .traceable import traceable_backbones

__all__ = ['DeformableDETRForExport', 'detector_outputs',
           'traceable_backbones', 'export_onnx', 'compare_with_onnxruntime']
