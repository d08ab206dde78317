"""Config round-trip examples: partition and path_labels (params {"w": f32[3,2], "b": f32[2]})."""

import gradtx

RULES = gradtx.path_labels([(r"^b$", "no_decay"), (r".*", "decay")])

EXAMPLES = {
    "partition": [
        gradtx.partition(
            {"decay": gradtx.adamw(1e-3, weight_decay=0.1), "no_decay": gradtx.sgd(0.1)},
            {"w": "decay", "b": "no_decay"},
        ),
        gradtx.partition(
            {"decay": gradtx.scale_by_adam(b1=0.8), "no_decay": gradtx.set_to_zero()},
            RULES,
            mask_compatible_extra_args=True,
        ),
        gradtx.partition({"all": gradtx.trace(0.5), "unused": gradtx.identity()}, "all"),
    ],
    "multi_transform": [
        gradtx.multi_transform(
            {"decay": gradtx.trace(0.9), "no_decay": gradtx.scale(-0.5)},
            gradtx.path_labels({r"^w$": "decay", r"^b$": "no_decay"}),
        ),
    ],
    "path_labels": [RULES, gradtx.path_labels([(r".", "only")])],
}
