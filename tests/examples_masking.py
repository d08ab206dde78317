"""Config round-trip examples for the masking family (params like {"w": f32[3,2], "b": f32[2]})."""

import gradtx

EXAMPLES = {
    "masked": [
        gradtx.masked(gradtx.trace(0.9), {"w": True, "b": False}),
        gradtx.masked(
            gradtx.chain(gradtx.scale_by_adam(b2=0.95), gradtx.scale(-0.1)),
            gradtx.path_mask(exclude=[r"^b$"]),
            mask_compatible_extra_args=True,
        ),
        gradtx.masked(gradtx.scale(0.5), True),
    ],
}
