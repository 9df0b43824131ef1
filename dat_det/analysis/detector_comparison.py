"""Two DETR-family detectors with the same weights compared on one batch, stage by stage.

DINO and two-stage Deformable DETR start their decoder from the ``num_queries`` encoder
proposals of highest score (the top-k query selection). With random weights many proposal
scores are nearly equal, and float rounding, which differs between two implementations of the
same computation, can order them differently. The two decoders then start from different
queries, and as every query attends to every other, their detections differ everywhere, by
as much as a box. So the detections are compared only when both decoders start from the same
queries; what is always compared is what comes before the selection:

- the encoder output;
- for two-stage models, the scores and box regressions of every encoder proposal;
- the decoder's starting reference points (how many queries differ).

The stages are observed with forward hooks on the encoder, the decoder and the proposal
branches of the head, on one ``predict`` call per model; nothing in the models changes.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

#: coordinate difference above which a decoder query counts as another query
QUERY_TOLERANCE = 1e-4


@dataclass
class DetectorComparison:
    """Largest absolute differences between two detectors' stages on one batch.

    Attributes:
        memory: over the encoder output ``(B, S, C)``.
        proposals: over the proposal scores ``(B, S, classes)`` and box regressions
            ``(B, S, 4)`` before the top-k selection; None for one-stage models.
        queries: decoder queries per image.
        differing_queries: queries whose starting reference point differs by more than
            :data:`QUERY_TOLERANCE` (a different proposal was selected), summed over images.
        detections: over the detections' scores and boxes; None when the decoders start
            from different queries (then the detections are not comparable).
    """

    memory: float
    proposals: float | None
    queries: int
    differing_queries: int
    detections: float | None

    def summary(self, ours: str = 'ours', theirs: str = 'mmdet') -> list[str]:
        """The comparison as report lines."""
        pair = f'|{ours} - {theirs}|'
        lines = [f'max {pair} over the encoder output: {self.memory:.2e}']
        if self.proposals is not None:
            lines.append(f'max {pair} over the scores and boxes of the encoder proposals '
                         f'(before the top-k query selection): {self.proposals:.2e}')
        if self.detections is not None:
            lines.append(f'max {pair} over scores and boxes: {self.detections:.2e}')
        else:
            lines.append(
                f'detections not compared: {self.differing_queries} of the {self.queries} '
                'decoder queries per image start from another proposal (nearly tied proposal '
                'scores, e.g. of random weights, that rounding ranks differently), and a '
                'different query set changes every detection')
        return lines


def _keep_output(seen: dict, name: str) -> Callable:
    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        seen.setdefault(name, output)
    return hook


def _keep_reference_points(seen: dict) -> Callable:
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
        seen.setdefault('reference_points', bound.arguments['reference_points'])
    return hook


def observe_stages(model: nn.Module, batch: dict) -> dict[str, Any]:
    """One ``predict`` call of ``model`` on a dataloader ``batch`` (not changed), with its
    encoder output (``memory``), the decoder's starting ``reference_points``, for two-stage
    models the proposal scores and boxes (``proposal_scores``, ``proposal_boxes``), and the
    ``detections`` (data samples with ``pred_instances``)."""
    seen: dict[str, Any] = {}
    handles = [model.encoder.register_forward_hook(_keep_output(seen, 'memory')),
               model.decoder.register_forward_pre_hook(_keep_reference_points(seen),
                                                       with_kwargs=True)]
    if getattr(model, 'as_two_stage', False):
        last = model.decoder.num_layers  # the head's extra branches score the proposals
        handles += [
            model.bbox_head.cls_branches[last].register_forward_hook(
                _keep_output(seen, 'proposal_scores')),
            model.bbox_head.reg_branches[last].register_forward_hook(
                _keep_output(seen, 'proposal_boxes'))]
    try:
        with torch.no_grad():
            data = model.data_preprocessor(copy.deepcopy(batch), False)
            seen['detections'] = model(**data, mode='predict')
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _max_diff(pairs: Sequence[tuple[Tensor, Tensor]]) -> float:
    return max((a - b).abs().max().item() if a.numel() else 0.0 for a, b in pairs)


def _detection_diff(ours: list, theirs: list) -> float | None:
    pairs = []
    for a, b in zip(ours, theirs):
        a, b = a.pred_instances, b.pred_instances
        if a.bboxes.shape != b.bboxes.shape:
            return None
        pairs += [(a.scores, b.scores), (a.bboxes, b.bboxes)]
    return _max_diff(pairs) if pairs else 0.0


def compare_detectors(ours: nn.Module, theirs: nn.Module, batch: dict) -> DetectorComparison:
    """Compare two DETR-family detectors (mmdet's ``DeformableDETR`` / ``DINO`` interface:
    ``encoder``, ``decoder`` with a ``reference_points`` argument, ``bbox_head`` branches)
    in eval mode with the same weights on a dataloader ``batch``."""
    a, b = observe_stages(ours, batch), observe_stages(theirs, batch)
    proposals = None
    if 'proposal_scores' in a and 'proposal_scores' in b:
        proposals = _max_diff([(a['proposal_scores'], b['proposal_scores']),
                               (a['proposal_boxes'], b['proposal_boxes'])])
    start_a, start_b = a['reference_points'], b['reference_points']
    moved = (start_a - start_b).abs().amax(-1) > QUERY_TOLERANCE  # (B, Nq)
    differing = int(moved.sum())
    detections = _detection_diff(a['detections'], b['detections']) if differing == 0 else None
    return DetectorComparison(memory=_max_diff([(a['memory'], b['memory'])]),
                              proposals=proposals, queries=start_a.shape[1],
                              differing_queries=differing, detections=detections)
