"""A traceable inference forward of :class:`MSDADeformableDETR` with dynamic image size.

The detector's own forward builds ``spatial_shapes`` with ``torch.tensor`` and reads level
sizes with ``.tolist()``: a trace records them as constants, so an exported graph would only
run at the traced size. :class:`DeformableDETRForExport` runs the same modules (backbone,
neck, encoder and decoder layers, head) for one unpadded image, but derives the level sizes
from the traced feature shapes (``spatial_shapes`` is a traced tensor of them). The op's own
export path (:func:`dat_det.ops.multi_scale_deformable_attn` during ``torch.onnx.export``)
then samples with the exact reference (gathers and arithmetic) on those traced sizes; a DAT
backbone's ``grid_sample`` needs ONNX ``GridSample``, opset 16 or later.
"""
from typing import List, Tuple

import torch
from torch import Tensor, nn

from dat_det.models.layers.deformable_detr import level_start_index

LevelSizes = List[Tuple[int, int]]


def encoder_reference_points(level_sizes: LevelSizes, device: torch.device) -> Tensor:
    """Pixel centres of every level, ``(1, S, levels, 2)`` normalized (x, y) (no padding)."""
    points = []
    for height, width in level_sizes:
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
        points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), -1))
    points = torch.cat(points, 0)
    return points[None, :, None].expand(1, -1, len(level_sizes), 2)


class DeformableDETRForExport(nn.Module):
    """Normalized image ``(1, 3, H, W)`` -> last decoder layer's ``scores`` ``(1, Nq,
    classes)`` (logits) and ``boxes`` ``(1, Nq, 4)`` normalized (cx, cy, w, h).

    Args:
        detector: an :class:`MSDADeformableDETR` in eval mode (any variant: with or without
            box refinement, single- or two-stage) or an :class:`MSDADINO` (same flow: its
            ``pre_decoder`` / ``forward_decoder`` take the same inputs).
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor]:
        det = self.detector
        feats = det.extract_feat(image)
        level_sizes = [(f.shape[-2], f.shape[-1]) for f in feats]
        spatial_shapes = torch.stack([torch._shape_as_tensor(f)[-2:] for f in feats])
        start_index = level_start_index(spatial_shapes)
        flat, pos = [], []
        for lvl, feat in enumerate(feats):
            flat.append(feat.flatten(2).transpose(1, 2))
            level_pos = det.positional_encoding(None, input=feat).flatten(2).transpose(1, 2)
            pos.append(level_pos + det.level_embed[lvl])
        memory, pos = torch.cat(flat, 1), torch.cat(pos, 1)
        valid_ratios = memory.new_ones(1, len(feats), 2)
        references = encoder_reference_points(level_sizes, image.device)
        for layer in det.encoder.layers:
            memory = layer(memory, pos, references, spatial_shapes, start_index, None)
        # two-stage proposals follow the traced spatial_shapes (encoder_proposals' export path)
        decoder_inputs, _ = det.pre_decoder(memory, None, spatial_shapes)
        decoder_outputs = det.forward_decoder(
            memory_mask=None, spatial_shapes=spatial_shapes, level_start_index=start_index,
            valid_ratios=valid_ratios, **decoder_inputs)
        scores, boxes = det.bbox_head(**decoder_outputs)
        return scores[-1], boxes[-1]


@torch.no_grad()
def detector_outputs(detector: nn.Module, image: Tensor) -> Tuple[Tensor, Tensor]:
    """The detector's own tensor-mode forward on an unpadded ``(1, 3, H, W)`` image: the last
    decoder layer's scores and boxes, the reference for the exported graph."""
    from mmdet.structures import DetDataSample

    size = tuple(image.shape[-2:])
    sample = DetDataSample(metainfo=dict(img_shape=size, batch_input_shape=size,
                                         ori_shape=size, pad_shape=size))
    scores, boxes = detector(image, [sample], mode='tensor')
    return scores[-1], boxes[-1]
