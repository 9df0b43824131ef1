"""Checkpoint converters: official Deformable-DETR names -> ours."""
import pytest
import torch

pytest.importorskip('mmdet')

from mmdet.registry import MODELS  # noqa: E402

from dat_det.models.checkpoint import from_official  # noqa: E402
from tests.helpers.detr_builders import (  # noqa: E402
    NUM_CLASSES,
    VARIANTS,
    make_batch,
    tiny_detr_cfg,
)

OFFICIAL_CLASS_IDS = [1, 3, 4]  # our labels 0, 1, 2 are official classes 1, 3, 4 of 5


def official_state_dict(ours: torch.nn.Module, refine: bool, two_stage: bool) -> dict:
    """Random weights under the parameter names of the official implementation.

    Names follow fundamentalvision/Deformable-DETR: ``DeformableDETR`` (backbone.0.body,
    input_proj, query_embed, class_embed, bbox_embed MLP ``layers``), ``DeformableTransformer``
    (level_embed, reference_points or enc_output/pos_trans), encoder layers (self_attn, norm1,
    linear1, linear2, norm2) and decoder layers (cross_attn + norm1, self_attn + norm2, FFN +
    norm3).
    """
    gen = torch.Generator().manual_seed(0)
    sd = {}

    def put(name, *shape):
        sd[name] = torch.randn(*shape, generator=gen)

    for key, value in ours.backbone.state_dict().items():
        if not key.endswith('num_batches_tracked'):
            put(f'backbone.0.body.{key}', *value.shape)
    embed = ours.embed_dims
    for lvl, cin in enumerate([16, 32, 64, 64]):
        kernel = 1 if lvl < 3 else 3
        put(f'input_proj.{lvl}.0.weight', embed, cin, kernel, kernel)
        put(f'input_proj.{lvl}.0.bias', embed)
        put(f'input_proj.{lvl}.1.weight', embed)
        put(f'input_proj.{lvl}.1.bias', embed)
    put('transformer.level_embed', 4, embed)

    def msda(prefix, attn):
        for name in ('sampling_offsets', 'attention_weights', 'value_proj', 'output_proj'):
            linear = getattr(attn, name)
            put(f'{prefix}.{name}.weight', linear.out_features, linear.in_features)
            put(f'{prefix}.{name}.bias', linear.out_features)

    def linear(prefix, cin, cout):
        put(f'{prefix}.weight', cout, cin)
        put(f'{prefix}.bias', cout)

    def norm(prefix):
        put(f'{prefix}.weight', embed)
        put(f'{prefix}.bias', embed)

    for i, layer in enumerate(ours.encoder.layers):
        p = f'transformer.encoder.layers.{i}'
        msda(f'{p}.self_attn', layer.self_attn)
        norm(f'{p}.norm1')
        linear(f'{p}.linear1', embed, 64)
        linear(f'{p}.linear2', 64, embed)
        norm(f'{p}.norm2')
    for i, layer in enumerate(ours.decoder.layers):
        p = f'transformer.decoder.layers.{i}'
        msda(f'{p}.cross_attn', layer.cross_attn)
        norm(f'{p}.norm1')
        put(f'{p}.self_attn.in_proj_weight', 3 * embed, embed)
        put(f'{p}.self_attn.in_proj_bias', 3 * embed)
        linear(f'{p}.self_attn.out_proj', embed, embed)
        norm(f'{p}.norm2')
        linear(f'{p}.linear1', embed, 64)
        linear(f'{p}.linear2', 64, embed)
        norm(f'{p}.norm3')
    if two_stage:
        linear('transformer.enc_output', embed, embed)
        norm('transformer.enc_output_norm')
        linear('transformer.pos_trans', 2 * embed, 2 * embed)
        put('transformer.pos_trans_norm.weight', 2 * embed)
        put('transformer.pos_trans_norm.bias', 2 * embed)
    else:
        linear('transformer.reference_points', embed, 2)
        put('query_embed.weight', ours.num_queries, 2 * embed)
    num_pred = ours.decoder.num_layers + int(two_stage)
    for i in range(num_pred):
        linear(f'class_embed.{i}', embed, 5)
        for j, (cin, cout) in enumerate([(embed, embed), (embed, embed), (embed, 4)]):
            linear(f'bbox_embed.{i}.layers.{j}', cin, cout)
        if not refine:  # the official model shares one head among all layers
            for j in range(3):
                for name in ('weight', 'bias'):
                    sd[f'bbox_embed.{i}.layers.{j}.{name}'] = sd[f'bbox_embed.0.layers.{j}.{name}']
            for name in ('weight', 'bias'):
                sd[f'class_embed.{i}.{name}'] = sd[f'class_embed.0.{name}']
    # the official decoder holds references to the heads it refines with
    for key in [k for k in sd if k.startswith(('bbox_embed.', 'class_embed.'))]:
        if key.startswith('bbox_embed.') and refine or key.startswith('class_embed.') and two_stage:
            sd[f'transformer.decoder.{key}'] = sd[key]
    return sd


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_official_checkpoint_loads_into_ours(variant):
    cfg = tiny_detr_cfg(**VARIANTS[variant])
    cfg['neck']['bias'] = True  # the official input projections have biases
    ours = MODELS.build(cfg)
    official = official_state_dict(ours, VARIANTS[variant]['with_box_refine'],
                                   VARIANTS[variant]['as_two_stage'])
    converted = from_official(official, class_ids=OFFICIAL_CLASS_IDS)
    ours.load_state_dict(converted, strict=True)

    dec = 'transformer.decoder.layers.1'
    pairs = {
        'backbone.layer2.0.conv1.weight': 'backbone.0.body.layer2.0.conv1.weight',
        'neck.convs.2.conv.bias': 'input_proj.2.0.bias',
        'neck.extra_convs.0.conv.weight': 'input_proj.3.0.weight',
        'neck.extra_convs.0.gn.weight': 'input_proj.3.1.weight',
        'level_embed': 'transformer.level_embed',
        'encoder.layers.1.ffn.fc2.weight': 'transformer.encoder.layers.1.linear2.weight',
        'encoder.layers.0.norm2.bias': 'transformer.encoder.layers.0.norm2.bias',
        'decoder.layers.1.norm1.weight': f'{dec}.norm2.weight',  # after self-attention
        'decoder.layers.1.norm2.weight': f'{dec}.norm1.weight',  # after cross-attention
        'decoder.layers.1.norm3.weight': f'{dec}.norm3.weight',
        'decoder.layers.1.self_attn.in_proj_weight': f'{dec}.self_attn.in_proj_weight',
        'decoder.layers.1.cross_attn.sampling_offsets.bias':
            f'{dec}.cross_attn.sampling_offsets.bias',
        'bbox_head.reg_branches.1.4.weight': 'bbox_embed.1.layers.2.weight',
        'bbox_head.reg_branches.0.2.bias': 'bbox_embed.0.layers.1.bias',
    }
    if VARIANTS[variant]['as_two_stage']:
        pairs['memory_trans_fc.weight'] = 'transformer.enc_output.weight'
        pairs['pos_trans_norm.bias'] = 'transformer.pos_trans_norm.bias'
    else:
        pairs['reference_points_fc.weight'] = 'transformer.reference_points.weight'
        pairs['query_embedding.weight'] = 'query_embed.weight'
    state = ours.state_dict()
    for ours_key, official_key in pairs.items():
        assert torch.equal(state[ours_key], official[official_key]), ours_key
    torch.testing.assert_close(state['bbox_head.cls_branches.1.weight'],
                               official['class_embed.1.weight'][OFFICIAL_CLASS_IDS])
    assert state['bbox_head.cls_branches.0.bias'].shape == (NUM_CLASSES, )


class _OfficialMSDeformAttn(torch.nn.Module):
    """``MSDeformAttn`` of the official code, on mmcv's pure-PyTorch sampling."""

    def __init__(self, embed, levels, heads, points):
        super().__init__()
        self.heads, self.levels, self.points = heads, levels, points
        self.sampling_offsets = torch.nn.Linear(embed, heads * levels * points * 2)
        self.attention_weights = torch.nn.Linear(embed, heads * levels * points)
        self.value_proj = torch.nn.Linear(embed, embed)
        self.output_proj = torch.nn.Linear(embed, embed)

    def forward(self, query, reference_points, src, shapes, padding_mask):
        from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
        n, lq, _ = query.shape
        value = self.value_proj(src).masked_fill(padding_mask[..., None], 0.0)
        value = value.view(n, src.shape[1], self.heads, -1)
        offsets = self.sampling_offsets(query).view(n, lq, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(n, lq, self.heads, -1).softmax(-1)
        weights = weights.view(n, lq, self.heads, self.levels, self.points)
        if reference_points.shape[-1] == 2:
            normalizer = torch.stack([shapes[..., 1], shapes[..., 0]], -1)
            loc = reference_points[:, :, None, :, None, :] + offsets / normalizer[
                None, None, None, :, None, :]
        else:
            loc = reference_points[:, :, None, :, None, :2] + offsets / self.points * \
                reference_points[:, :, None, :, None, 2:] * 0.5
        return self.output_proj(multi_scale_deformable_attn_pytorch(value, shapes, loc, weights))


class _OfficialEncoderLayer(torch.nn.Module):
    def __init__(self, embed, ffn, levels, heads, points):
        super().__init__()
        self.self_attn = _OfficialMSDeformAttn(embed, levels, heads, points)
        self.norm1 = torch.nn.LayerNorm(embed)
        self.linear1, self.linear2 = torch.nn.Linear(embed, ffn), torch.nn.Linear(ffn, embed)
        self.norm2 = torch.nn.LayerNorm(embed)

    def forward(self, src, pos, ref, shapes, mask):
        src = self.norm1(src + self.self_attn(src + pos, ref, src, shapes, mask))
        return self.norm2(src + self.linear2(self.linear1(src).relu()))


class _OfficialDecoderLayer(torch.nn.Module):
    def __init__(self, embed, ffn, levels, heads, points):
        super().__init__()
        self.cross_attn = _OfficialMSDeformAttn(embed, levels, heads, points)
        self.norm1 = torch.nn.LayerNorm(embed)
        self.self_attn = torch.nn.MultiheadAttention(embed, heads)
        self.norm2 = torch.nn.LayerNorm(embed)
        self.linear1, self.linear2 = torch.nn.Linear(embed, ffn), torch.nn.Linear(ffn, embed)
        self.norm3 = torch.nn.LayerNorm(embed)

    def forward(self, tgt, query_pos, ref, src, shapes, mask):
        q = (tgt + query_pos).transpose(0, 1)
        tgt = self.norm2(tgt + self.self_attn(q, q, tgt.transpose(0, 1))[0].transpose(0, 1))
        tgt = self.norm1(tgt + self.cross_attn(tgt + query_pos, ref, src, shapes, mask))
        return self.norm3(tgt + self.linear2(self.linear1(tgt).relu()))


def _official_forward(sd, backbone, inputs, img_shapes, refine, embed=32, heads=4):
    """The official ``DeformableDETR.forward`` (single-stage), run on an official state dict.

    Returns the last decoder layer's ``pred_logits`` and ``pred_boxes``.
    """
    from dat_det.models.layers.deformable_detr import (
        encoder_reference_points,
        inverse_sigmoid,
        level_masks,
        padding_mask,
        valid_ratios,
    )
    from dat_det.models.layers.deformable_detr.positional_encoding import SinePositionalEncoding

    def sub(prefix):
        return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}

    feats = list(backbone(inputs))
    srcs = []
    for lvl in range(4):
        conv_w = sd[f'input_proj.{lvl}.0.weight']
        x = feats[lvl] if lvl < 3 else feats[-1]
        x = torch.nn.functional.conv2d(x, conv_w, sd[f'input_proj.{lvl}.0.bias'],
                                       stride=1 if lvl < 3 else 2, padding=conv_w.shape[-1] // 2)
        srcs.append(torch.nn.functional.group_norm(x, 8, sd[f'input_proj.{lvl}.1.weight'],
                                                   sd[f'input_proj.{lvl}.1.bias']))
    mask = padding_mask(inputs.shape[-2:], img_shapes, inputs.device)
    masks = level_masks(mask, srcs)
    pe = SinePositionalEncoding(embed // 2, normalize=True, offset=-0.5)
    shapes = torch.tensor([s.shape[-2:] for s in srcs])
    src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
    pos = torch.cat([pe(m).flatten(2).transpose(1, 2) + sd['transformer.level_embed'][lvl]
                     for lvl, m in enumerate(masks)], 1)
    mask_flat = torch.cat([m.flatten(1) for m in masks], 1)
    ratios = torch.stack([valid_ratios(m) for m in masks], 1)
    ref = encoder_reference_points(shapes, ratios)
    for i in range(2):
        layer = _OfficialEncoderLayer(embed, 64, 4, heads, 2)
        layer.load_state_dict(sub(f'transformer.encoder.layers.{i}.'))
        src = layer(src, pos, ref, shapes, mask_flat)

    query_pos, tgt = torch.split(sd['query_embed.weight'], embed, dim=1)
    query_pos = query_pos[None].expand(inputs.shape[0], -1, -1)
    tgt = tgt[None].expand(inputs.shape[0], -1, -1)
    ref_fc = torch.nn.Linear(embed, 2)
    ref_fc.load_state_dict(sub('transformer.reference_points.'))
    reference = ref_fc(query_pos).sigmoid()
    references = [reference]
    bbox_embed = []
    for i in range(2):
        mlp = torch.nn.Sequential(torch.nn.Linear(embed, embed), torch.nn.ReLU(),
                                  torch.nn.Linear(embed, embed), torch.nn.ReLU(),
                                  torch.nn.Linear(embed, 4))
        mlp.load_state_dict({k.replace('layers.1', '2').replace('layers.2', '4')
                             .replace('layers.0', '0'): v
                             for k, v in sub(f'bbox_embed.{i}.').items()})
        bbox_embed.append(mlp)
    for i in range(2):
        layer = _OfficialDecoderLayer(embed, 64, 4, heads, 2)
        layer.load_state_dict(sub(f'transformer.decoder.layers.{i}.'))
        if reference.shape[-1] == 4:
            ref_in = reference[:, :, None] * torch.cat([ratios, ratios], -1)[:, None]
        else:
            ref_in = reference[:, :, None] * ratios[:, None]
        tgt = layer(tgt, query_pos, ref_in, src, shapes, mask_flat)
        if refine:
            tmp = bbox_embed[i](tgt)
            if reference.shape[-1] == 4:
                reference = (tmp + inverse_sigmoid(reference)).sigmoid().detach()
            else:
                tmp[..., :2] = tmp[..., :2] + inverse_sigmoid(reference)
                reference = tmp.sigmoid().detach()
        references.append(reference)
    logits = torch.nn.functional.linear(tgt, sd['class_embed.1.weight'], sd['class_embed.1.bias'])
    tmp = bbox_embed[1](tgt)
    last_ref = inverse_sigmoid(references[1])
    if last_ref.shape[-1] == 4:
        tmp = tmp + last_ref
    else:
        tmp[..., :2] = tmp[..., :2] + last_ref
    return logits, tmp.sigmoid()


@pytest.mark.parametrize('variant', ['multi-scale', 'refine'])
def test_official_checkpoint_gives_official_outputs(variant):
    """A re-enactment of the official forward on random official weights == ours converted."""
    pytest.importorskip('mmcv.ops')

    refine = VARIANTS[variant]['with_box_refine']
    cfg = tiny_detr_cfg(**VARIANTS[variant])
    cfg['neck']['bias'] = True
    torch.manual_seed(0)
    ours = MODELS.build(cfg).eval()
    official = {k: v * 0.3 for k, v in official_state_dict(ours, refine, False).items()}
    for key in [k for k in official if k.endswith('running_var')]:
        official[key] = official[key].abs() + 0.5
    ours.load_state_dict(from_official(official, class_ids=OFFICIAL_CLASS_IDS), strict=True)
    inputs, samples = make_batch()
    with torch.no_grad():
        cls_scores, boxes = ours(inputs, samples, mode='tensor')
        logits, expected_boxes = _official_forward(
            official, ours.backbone, inputs, [s.img_shape for s in samples], refine)
    torch.testing.assert_close(cls_scores[-1], logits[..., OFFICIAL_CLASS_IDS], atol=1e-4,
                               rtol=1e-4)
    torch.testing.assert_close(boxes[-1], expected_boxes, atol=1e-4, rtol=1e-4)
