"""DAT / DAT++ in timm's model registry: ``import dat_det.timm`` registers ``dat_tiny``,
``dat_small``, ``dat_base``, ``dat_pp_tiny``, ``dat_pp_small`` and ``dat_pp_base``.

    import timm, dat_det.timm
    model = timm.create_model('dat_pp_tiny', features_only=True, out_indices=(1, 2, 3))
"""
from .dat import DeformableAttentionTransformer, checkpoint_filter_fn

__all__ = ['DeformableAttentionTransformer', 'checkpoint_filter_fn']
