"""Config round-trip examples for freezing (params like {"w": f32[3,2], "b": f32[2]})."""

import gradtx

EXAMPLES = {
    "set_to_zero": [gradtx.set_to_zero()],
    "freeze": [
        gradtx.freeze({"w": False, "b": True}),
        gradtx.freeze(gradtx.path_mask(include=[r"^w$"])),
        gradtx.freeze(False),
    ],
    "selective_transform": [
        gradtx.selective_transform(gradtx.adam(1e-3), freeze_mask={"w": True, "b": False}),
        gradtx.selective_transform(
            gradtx.sgd(0.1, momentum=0.9), freeze_mask=gradtx.path_mask(exclude=[r"^w$"])
        ),
    ],
}
