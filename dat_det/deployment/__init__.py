"""Export of dat_det detectors to ONNX (see :mod:`.deformable_detr_onnx`).

No function is replaced during export: the modules have declared export paths, taken while
``torch.onnx.export`` traces them (``torch.onnx.is_in_onnx_export()``): the deformable
attention op samples with its exact reference
(:func:`dat_det.ops.multi_scale_deformable_attn`), DAT's neighbourhood attention gathers its
windows with ``index_select`` (:class:`dat_det.models.layers.dat.NeighborhoodAttention2D`),
and the two-stage proposals are built from a traced ``spatial_shapes`` tensor
(:func:`dat_det.models.layers.deformable_detr.encoder_proposals`). Dense one-stage detectors
(RTMDet, YOLOX, with or without DAttention blocks) export their raw head outputs
(:mod:`.dense_detector_onnx`).
"""
from .deformable_detr_onnx import (
    DeformableDETRForExport,
    detector_outputs,
)
from .dense_detector_onnx import DenseDetectorForExport, flatten_outputs
from .onnx_check import compare_with_onnxruntime, export_onnx

__all__ = ['DeformableDETRForExport', 'DenseDetectorForExport', 'detector_outputs',
           'export_onnx', 'compare_with_onnxruntime', 'flatten_outputs']
