"""Config round-trip examples for the clipping and constraining families."""

import gradtx

EXAMPLES = {
    "adaptive_grad_clip": [
        gradtx.adaptive_grad_clip(0.01),
        gradtx.adaptive_grad_clip(0.05, eps=1e-2, axis=0),
        gradtx.adaptive_grad_clip(0.1, 1e-4, axis=(-1,)),
    ],
    "clip": [gradtx.clip(0.5), gradtx.clip(2.0)],
    "clip_by_block_rms": [gradtx.clip_by_block_rms(0.25)],
    "clip_by_global_norm": [gradtx.clip_by_global_norm(1.0), gradtx.clip_by_global_norm(0.3)],
    "keep_params_nonnegative": [gradtx.keep_params_nonnegative()],
    "zero_nans": [gradtx.zero_nans()],
}
