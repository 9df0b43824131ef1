"""Reference: a plain port of the official DAT / DAT++ formulation (LeapLabTHU/DAT).

Kept literal on purpose (einsum attention, explicit ``(H - 1)`` normalisation, fixed-size shift
masks, official module names) so that tests and ``tools/analysis_tools/benchmark_backbone.py``
can compare dat_det's ``DAT`` against it. Neighbourhood attention, for which the official
model calls natten, is a naive per-query loop with natten 0.14's semantics (windows shifted
inwards at borders, zero padding of maps smaller than the kernel). Only the blocks DAT and
DAT++ use are ported (L, S, N, D). A test oracle: nothing under ``dat_det.models`` imports it.
"""
import math

import einops
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def to_2tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


class LayerNormProxy(nn.Module):

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = einops.rearrange(x, 'b c h w -> b h w c')
        x = self.norm(x)
        return einops.rearrange(x, 'b h w c -> b c h w')


class LocalAttention(nn.Module):

    def __init__(self, dim, heads, window_size, attn_drop, proj_drop):
        super().__init__()
        window_size = to_2tuple(window_size)
        self.proj_qkv = nn.Linear(dim, 3 * dim)
        self.heads = heads
        head_dim = dim // heads
        self.scale = head_dim ** -0.5
        self.proj_out = nn.Linear(dim, dim)
        self.window_size = window_size
        self.proj_drop = nn.Dropout(proj_drop, inplace=True)
        self.attn_drop = nn.Dropout(attn_drop, inplace=True)
        Wh, Ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * Wh - 1) * (2 * Ww - 1), heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.01)
        coords_h = torch.arange(self.window_size[0])
        coords_w = torch.arange(self.window_size[1])
        coords = torch.stack(torch.meshgrid([coords_h, coords_w], indexing='ij'))
        coords_flatten = torch.flatten(coords, 1)
        relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]
        relative_coords = relative_coords.permute(1, 2, 0).contiguous()
        relative_coords[:, :, 0] += self.window_size[0] - 1
        relative_coords[:, :, 1] += self.window_size[1] - 1
        relative_coords[:, :, 0] *= 2 * self.window_size[1] - 1
        relative_position_index = relative_coords.sum(-1)
        self.register_buffer('relative_position_index', relative_position_index)

    def forward(self, x, mask=None):
        B, C, H, W = x.size()
        r1, r2 = H // self.window_size[0], W // self.window_size[1]
        x_total = einops.rearrange(x, 'b c (r1 h1) (r2 w1) -> b (r1 r2) (h1 w1) c',
                                   h1=self.window_size[0], w1=self.window_size[1])
        x_total = einops.rearrange(x_total, 'b m n c -> (b m) n c')
        qkv = self.proj_qkv(x_total)
        q, k, v = torch.chunk(qkv, 3, dim=2)
        q = q * self.scale
        q, k, v = [einops.rearrange(t, 'b n (h c1) -> b h n c1', h=self.heads)
                   for t in [q, k, v]]
        attn = torch.einsum('b h m c, b h n c -> b h m n', q, k)
        relative_position_bias = self.relative_position_bias_table[
            self.relative_position_index.view(-1)].view(
            self.window_size[0] * self.window_size[1],
            self.window_size[0] * self.window_size[1], -1)
        relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()
        attn = attn + relative_position_bias.unsqueeze(0)
        if mask is not None:
            nW, ww, _ = mask.size()
            attn = einops.rearrange(attn, '(b n) h w1 w2 -> b n h w1 w2', n=nW, h=self.heads,
                                    w1=ww, w2=ww) + mask.reshape(1, nW, 1, ww, ww)
            attn = einops.rearrange(attn, 'b n h w1 w2 -> (b n) h w1 w2')
        attn = self.attn_drop(attn.softmax(dim=3))
        x = torch.einsum('b h m n, b h n c -> b h m c', attn, v)
        x = einops.rearrange(x, 'b h n c1 -> b n (h c1)')
        x = self.proj_drop(self.proj_out(x))
        x = einops.rearrange(x, '(b r1 r2) (h1 w1) c -> b c (r1 h1) (r2 w1)', r1=r1, r2=r2,
                             h1=self.window_size[0], w1=self.window_size[1])
        return x, None, None


class ShiftWindowAttention(LocalAttention):

    def __init__(self, dim, heads, window_size, attn_drop, proj_drop, shift_size, fmap_size):
        super().__init__(dim, heads, window_size, attn_drop, proj_drop)
        self.fmap_size = to_2tuple(fmap_size)
        self.shift_size = shift_size
        assert 0 < self.shift_size < min(self.window_size), 'wrong shift size.'
        img_mask = torch.zeros(*self.fmap_size)
        h_slices = (slice(0, -self.window_size[0]),
                    slice(-self.window_size[0], -self.shift_size),
                    slice(-self.shift_size, None))
        w_slices = (slice(0, -self.window_size[1]),
                    slice(-self.window_size[1], -self.shift_size),
                    slice(-self.shift_size, None))
        cnt = 0
        for h in h_slices:
            for w in w_slices:
                img_mask[h, w] = cnt
                cnt += 1
        mask_windows = einops.rearrange(img_mask, '(r1 h1) (r2 w1) -> (r1 r2) (h1 w1)',
                                        h1=self.window_size[0], w1=self.window_size[1])
        attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
        attn_mask = attn_mask.masked_fill(attn_mask != 0, (-100.0)).masked_fill(
            attn_mask == 0, 0.0)
        self.register_buffer('attn_mask', attn_mask)

    def forward(self, x):
        shifted_x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(2, 3))
        sw_x, _, _ = super().forward(shifted_x, self.attn_mask)
        x = torch.roll(sw_x, shifts=(self.shift_size, self.shift_size), dims=(2, 3))
        return x, None, None


class NaiveNeighborhoodAttention2D(nn.Module):
    """natten 0.14 ``NeighborhoodAttention2D`` (no rpb), one query at a time."""

    def __init__(self, dim, kernel_size, num_heads, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.kernel_size = kernel_size
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        B, Hp, Wp, C = x.shape
        k_size = self.kernel_size
        pad_r, pad_b = max(0, k_size - Wp), max(0, k_size - Hp)
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        _, H, W, _ = x.shape
        qkv = self.qkv(x).reshape(B, H, W, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5)
        q = q * self.scale
        out = torch.zeros_like(q)
        for i in range(H):
            si = min(max(i - k_size // 2, 0), H - k_size)
            for j in range(W):
                sj = min(max(j - k_size // 2, 0), W - k_size)
                keys = k[:, :, si:si + k_size, sj:sj + k_size].flatten(2, 3)
                vals = v[:, :, si:si + k_size, sj:sj + k_size].flatten(2, 3)
                attn = torch.einsum('bnd,bnkd->bnk', q[:, :, i, j], keys).softmax(-1)
                out[:, :, i, j] = torch.einsum('bnk,bnkd->bnd', attn, vals)
        x = out.permute(0, 2, 3, 1, 4).reshape(B, H, W, C)[:, :Hp, :Wp]
        x = self.proj(x)
        return x.permute(0, 3, 1, 2), None, None


class DAttentionBaseline(nn.Module):

    def __init__(self, q_size, kv_size, n_heads, n_head_channels, n_groups, attn_drop,
                 proj_drop, stride, offset_range_factor, use_pe, dwc_pe, no_off, fixed_pe,
                 ksize, log_cpb):
        super().__init__()
        self.dwc_pe = dwc_pe
        self.n_head_channels = n_head_channels
        self.scale = self.n_head_channels ** -0.5
        self.n_heads = n_heads
        self.q_h, self.q_w = q_size
        self.kv_h, self.kv_w = self.q_h // stride, self.q_w // stride
        self.nc = n_head_channels * n_heads
        self.n_groups = n_groups
        self.n_group_channels = self.nc // self.n_groups
        self.n_group_heads = self.n_heads // self.n_groups
        self.use_pe = use_pe
        self.fixed_pe = fixed_pe
        self.no_off = no_off
        self.offset_range_factor = offset_range_factor
        self.ksize = ksize
        self.log_cpb = log_cpb
        self.stride = stride
        kk = self.ksize
        pad_size = kk // 2 if kk != stride else 0
        self.conv_offset = nn.Sequential(
            nn.Conv2d(self.n_group_channels, self.n_group_channels, kk, stride, pad_size,
                      groups=self.n_group_channels),
            LayerNormProxy(self.n_group_channels),
            nn.GELU(),
            nn.Conv2d(self.n_group_channels, 2, 1, 1, 0, bias=False))
        if self.no_off:
            for m in self.conv_offset.parameters():
                m.requires_grad_(False)
        self.proj_q = nn.Conv2d(self.nc, self.nc, kernel_size=1, stride=1, padding=0)
        self.proj_k = nn.Conv2d(self.nc, self.nc, kernel_size=1, stride=1, padding=0)
        self.proj_v = nn.Conv2d(self.nc, self.nc, kernel_size=1, stride=1, padding=0)
        self.proj_out = nn.Conv2d(self.nc, self.nc, kernel_size=1, stride=1, padding=0)
        self.proj_drop = nn.Dropout(proj_drop, inplace=True)
        self.attn_drop = nn.Dropout(attn_drop, inplace=True)
        if self.use_pe and not self.no_off:
            if self.dwc_pe:
                self.rpe_table = nn.Conv2d(self.nc, self.nc, kernel_size=3, stride=1,
                                           padding=1, groups=self.nc)
            elif self.fixed_pe:
                self.rpe_table = nn.Parameter(
                    torch.zeros(self.n_heads, self.q_h * self.q_w, self.kv_h * self.kv_w))
                nn.init.trunc_normal_(self.rpe_table, std=0.01)
            elif self.log_cpb:
                self.rpe_table = nn.Sequential(
                    nn.Linear(2, 32, bias=True), nn.ReLU(inplace=True),
                    nn.Linear(32, self.n_group_heads, bias=False))
            else:
                self.rpe_table = nn.Parameter(
                    torch.zeros(self.n_heads, self.q_h * 2 - 1, self.q_w * 2 - 1))
                nn.init.trunc_normal_(self.rpe_table, std=0.01)
        else:
            self.rpe_table = None

    @torch.no_grad()
    def _get_ref_points(self, H_key, W_key, B, dtype, device):
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, H_key - 0.5, H_key, dtype=dtype, device=device),
            torch.linspace(0.5, W_key - 0.5, W_key, dtype=dtype, device=device),
            indexing='ij')
        ref = torch.stack((ref_y, ref_x), -1)
        ref[..., 1].div_(W_key - 1.0).mul_(2.0).sub_(1.0)
        ref[..., 0].div_(H_key - 1.0).mul_(2.0).sub_(1.0)
        ref = ref[None, ...].expand(B * self.n_groups, -1, -1, -1)
        return ref

    @torch.no_grad()
    def _get_q_grid(self, H, W, B, dtype, device):
        ref_y, ref_x = torch.meshgrid(
            torch.arange(0, H, dtype=dtype, device=device),
            torch.arange(0, W, dtype=dtype, device=device),
            indexing='ij')
        ref = torch.stack((ref_y, ref_x), -1)
        ref[..., 1].div_(W - 1.0).mul_(2.0).sub_(1.0)
        ref[..., 0].div_(H - 1.0).mul_(2.0).sub_(1.0)
        ref = ref[None, ...].expand(B * self.n_groups, -1, -1, -1)
        return ref

    def forward(self, x):
        B, C, H, W = x.size()
        dtype, device = x.dtype, x.device
        q = self.proj_q(x)
        q_off = einops.rearrange(q, 'b (g c) h w -> (b g) c h w', g=self.n_groups,
                                 c=self.n_group_channels)
        offset = self.conv_offset(q_off).contiguous()
        Hk, Wk = offset.size(2), offset.size(3)
        n_sample = Hk * Wk
        if self.offset_range_factor >= 0 and not self.no_off:
            offset_range = torch.tensor([1.0 / (Hk - 1.0), 1.0 / (Wk - 1.0)],
                                        device=device).reshape(1, 2, 1, 1)
            offset = offset.tanh().mul(offset_range).mul(self.offset_range_factor)
        offset = einops.rearrange(offset, 'b p h w -> b h w p')
        reference = self._get_ref_points(Hk, Wk, B, dtype, device)
        if self.no_off:
            offset = offset.fill_(0.0)
        if self.offset_range_factor >= 0:
            pos = offset + reference
        else:
            pos = (offset + reference).clamp(-1., +1.)
        if self.no_off:
            x_sampled = F.avg_pool2d(x, kernel_size=self.stride, stride=self.stride)
        else:
            x_sampled = F.grid_sample(
                input=x.reshape(B * self.n_groups, self.n_group_channels, H, W),
                grid=pos[..., (1, 0)], mode='bilinear', align_corners=True)
        x_sampled = x_sampled.reshape(B, C, 1, n_sample)
        q = q.reshape(B * self.n_heads, self.n_head_channels, H * W)
        k = self.proj_k(x_sampled).reshape(B * self.n_heads, self.n_head_channels, n_sample)
        v = self.proj_v(x_sampled).reshape(B * self.n_heads, self.n_head_channels, n_sample)
        attn = torch.einsum('b c m, b c n -> b m n', q, k)
        attn = attn.mul(self.scale)
        if self.use_pe and (not self.no_off):
            if self.dwc_pe:
                residual_lepe = self.rpe_table(q.reshape(B, C, H, W)).reshape(
                    B * self.n_heads, self.n_head_channels, H * W)
            elif self.fixed_pe:
                rpe_table = self.rpe_table
                attn_bias = rpe_table[None, ...].expand(B, -1, -1, -1)
                attn = attn + attn_bias.reshape(B * self.n_heads, H * W, n_sample)
            elif self.log_cpb:
                q_grid = self._get_q_grid(H, W, B, dtype, device)
                displacement = (q_grid.reshape(B * self.n_groups, H * W, 2).unsqueeze(2)
                                - pos.reshape(B * self.n_groups, n_sample, 2).unsqueeze(1)
                                ).mul(4.0)
                displacement = torch.sign(displacement) * torch.log2(
                    torch.abs(displacement) + 1.0) / np.log2(8.0)
                attn_bias = self.rpe_table(displacement)
                attn = attn + einops.rearrange(attn_bias, 'b m n h -> (b h) m n',
                                               h=self.n_group_heads)
            else:
                rpe_table = self.rpe_table
                rpe_bias = rpe_table[None, ...].expand(B, -1, -1, -1)
                q_grid = self._get_q_grid(H, W, B, dtype, device)
                displacement = (q_grid.reshape(B * self.n_groups, H * W, 2).unsqueeze(2)
                                - pos.reshape(B * self.n_groups, n_sample, 2).unsqueeze(1)
                                ).mul(0.5)
                attn_bias = F.grid_sample(
                    input=einops.rearrange(rpe_bias, 'b (g c) h w -> (b g) c h w',
                                           c=self.n_group_heads, g=self.n_groups),
                    grid=displacement[..., (1, 0)], mode='bilinear', align_corners=True)
                attn_bias = attn_bias.reshape(B * self.n_heads, H * W, n_sample)
                attn = attn + attn_bias
        attn = F.softmax(attn, dim=2)
        attn = self.attn_drop(attn)
        out = torch.einsum('b m n, b c n -> b c m', attn, v)
        if self.use_pe and self.dwc_pe:
            out = out + residual_lepe
        out = out.reshape(B, C, H, W)
        y = self.proj_drop(self.proj_out(out))
        return (y, pos.reshape(B, self.n_groups, Hk, Wk, 2),
                reference.reshape(B, self.n_groups, Hk, Wk, 2))


class TransformerMLP(nn.Module):

    def __init__(self, channels, expansion, drop):
        super().__init__()
        self.dim1 = channels
        self.dim2 = channels * expansion
        self.chunk = nn.Sequential()
        self.chunk.add_module('linear1', nn.Linear(self.dim1, self.dim2))
        self.chunk.add_module('act', nn.GELU())
        self.chunk.add_module('drop1', nn.Dropout(drop, inplace=True))
        self.chunk.add_module('linear2', nn.Linear(self.dim2, self.dim1))
        self.chunk.add_module('drop2', nn.Dropout(drop, inplace=True))

    def forward(self, x):
        _, _, H, W = x.size()
        x = einops.rearrange(x, 'b c h w -> b (h w) c')
        x = self.chunk(x)
        x = einops.rearrange(x, 'b (h w) c -> b c h w', h=H, w=W)
        return x


class TransformerMLPWithConv(nn.Module):

    def __init__(self, channels, expansion, drop):
        super().__init__()
        self.dim1 = channels
        self.dim2 = channels * expansion
        self.linear1 = nn.Sequential(nn.Conv2d(self.dim1, self.dim2, 1, 1, 0))
        self.drop1 = nn.Dropout(drop, inplace=True)
        self.act = nn.GELU()
        self.linear2 = nn.Sequential(nn.Conv2d(self.dim2, self.dim1, 1, 1, 0))
        self.drop2 = nn.Dropout(drop, inplace=True)
        self.dwc = nn.Conv2d(self.dim2, self.dim2, 3, 1, 1, groups=self.dim2)

    def forward(self, x):
        x = self.linear1(x)
        x = self.drop1(x)
        x = x + self.dwc(x)
        x = self.act(x)
        x = self.linear2(x)
        x = self.drop2(x)
        return x


class LayerScale(nn.Module):

    def __init__(self, dim, inplace=False, init_values=1e-5):
        super().__init__()
        self.inplace = inplace
        self.weight = nn.Parameter(torch.ones(dim) * init_values)

    def forward(self, x):
        return x * self.weight.view(-1, 1, 1)


class TransformerStage(nn.Module):

    def __init__(self, fmap_size, window_size, dim_in, dim_embed, depths, stage_spec,
                 n_groups, use_pe, heads, stride, offset_range_factor, dwc_pe, no_off,
                 fixed_pe, expansion, use_dwc_mlp, ksize, nat_ksize, layer_scale_value,
                 use_lpu, log_cpb):
        super().__init__()
        fmap_size = to_2tuple(fmap_size)
        self.depths = depths
        hc = dim_embed // heads
        assert dim_embed == heads * hc
        self.proj = nn.Conv2d(dim_in, dim_embed, 1, 1, 0) if dim_in != dim_embed \
            else nn.Identity()
        self.stage_spec = stage_spec
        self.use_lpu = use_lpu
        self.ln_cnvnxt = nn.ModuleDict()
        self.layer_norms = nn.ModuleList(
            [LayerNormProxy(dim_embed) for d in range(2 * depths)])
        mlp_fn = TransformerMLPWithConv if use_dwc_mlp else TransformerMLP
        self.mlps = nn.ModuleList([mlp_fn(dim_embed, expansion, 0.0) for _ in range(depths)])
        self.attns = nn.ModuleList()
        self.drop_path = nn.ModuleList()
        self.layer_scales = nn.ModuleList(
            [LayerScale(dim_embed, init_values=layer_scale_value) if layer_scale_value > 0.0
             else nn.Identity() for _ in range(2 * depths)])
        self.local_perception_units = nn.ModuleList(
            [nn.Conv2d(dim_embed, dim_embed, kernel_size=3, stride=1, padding=1,
                       groups=dim_embed) if use_lpu else nn.Identity()
             for _ in range(depths)])
        for i in range(depths):
            if stage_spec[i] == 'L':
                self.attns.append(LocalAttention(dim_embed, heads, window_size, 0.0, 0.0))
            elif stage_spec[i] == 'D':
                self.attns.append(DAttentionBaseline(
                    fmap_size, fmap_size, heads, hc, n_groups, 0.0, 0.0, stride,
                    offset_range_factor, use_pe, dwc_pe, no_off, fixed_pe, ksize, log_cpb))
            elif stage_spec[i] == 'S':
                shift_size = math.ceil(window_size / 2)
                self.attns.append(ShiftWindowAttention(dim_embed, heads, window_size, 0.0,
                                                       0.0, shift_size, fmap_size))
            elif stage_spec[i] == 'N':
                self.attns.append(NaiveNeighborhoodAttention2D(dim_embed, nat_ksize, heads))
            else:
                raise NotImplementedError(stage_spec[i])
            self.drop_path.append(nn.Identity())

    def forward(self, x):
        x = self.proj(x)
        for d in range(self.depths):
            if self.use_lpu:
                x0 = x
                x = self.local_perception_units[d](x.contiguous())
                x = x + x0
            x0 = x
            x, pos, ref = self.attns[d](self.layer_norms[2 * d](x))
            x = self.layer_scales[2 * d](x)
            x = self.drop_path[d](x) + x0
            x0 = x
            x = self.mlps[d](self.layer_norms[2 * d + 1](x))
            x = self.layer_scales[2 * d + 1](x)
            x = self.drop_path[d](x) + x0
        return x


class OfficialDAT(nn.Module):
    """Official classification ``DAT`` (eval-mode numerics; drop path / dropout omitted)."""

    def __init__(self, img_size=224, patch_size=4, num_classes=1000, expansion=4,
                 dim_stem=96, dims=(96, 192, 384, 768), depths=(2, 2, 6, 2),
                 heads=(3, 6, 12, 24), window_sizes=(7, 7, 7, 7), strides=(-1, -1, -1, -1),
                 offset_range_factor=(1, 2, 3, 4), stage_spec=None, groups=(-1, -1, 3, 6),
                 use_pes=(False,) * 4, dwc_pes=(False,) * 4, fixed_pes=(False,) * 4,
                 no_offs=(False,) * 4, use_dwc_mlps=(False,) * 4, use_conv_patches=False,
                 ksizes=(9, 7, 5, 3), nat_ksizes=(3, 3, 3, 3),
                 layer_scale_values=(-1, -1, -1, -1), use_lpus=(False,) * 4,
                 log_cpb=(False,) * 4, **kwargs):
        super().__init__()
        self.patch_proj = nn.Sequential(
            nn.Conv2d(3, dim_stem // 2, 3, patch_size // 2, 1),
            LayerNormProxy(dim_stem // 2),
            nn.GELU(),
            nn.Conv2d(dim_stem // 2, dim_stem, 3, patch_size // 2, 1),
            LayerNormProxy(dim_stem)
        ) if use_conv_patches else nn.Sequential(
            nn.Conv2d(3, dim_stem, patch_size, patch_size, 0),
            LayerNormProxy(dim_stem))
        img_size = img_size // patch_size
        self.stages = nn.ModuleList()
        for i in range(4):
            dim1 = dim_stem if i == 0 else dims[i - 1] * 2
            dim2 = dims[i]
            self.stages.append(TransformerStage(
                img_size, window_sizes[i], dim1, dim2, depths[i], stage_spec[i], groups[i],
                use_pes[i], heads[i], strides[i], offset_range_factor[i], dwc_pes[i],
                no_offs[i], fixed_pes[i], expansion, use_dwc_mlps[i], ksizes[i],
                nat_ksizes[i], layer_scale_values[i], use_lpus[i], log_cpb[i]))
            img_size = img_size // 2
        self.down_projs = nn.ModuleList()
        for i in range(3):
            self.down_projs.append(nn.Sequential(
                nn.Conv2d(dims[i], dims[i + 1], 3, 2, 1, bias=False),
                LayerNormProxy(dims[i + 1])
            ) if use_conv_patches else nn.Sequential(
                nn.Conv2d(dims[i], dims[i + 1], 2, 2, 0, bias=False),
                LayerNormProxy(dims[i + 1])))
        self.cls_norm = LayerNormProxy(dims[-1])
        self.cls_head = nn.Linear(dims[-1], num_classes)

    def forward_features(self, x):
        """The four stage outputs (before down-sampling)."""
        x = self.patch_proj(x)
        outs = []
        for i in range(4):
            x = self.stages[i](x)
            outs.append(x)
            if i < 3:
                x = self.down_projs[i](x)
        return outs

    def forward(self, x):
        x = self.forward_features(x)[-1]
        x = self.cls_norm(x)
        x = F.adaptive_avg_pool2d(x, 1)
        x = torch.flatten(x, 1)
        return self.cls_head(x), None, None
