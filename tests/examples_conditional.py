"""Config round-trip examples for the conditional family: apply_if_finite."""

import gradtx

EXAMPLES = {
    "apply_if_finite": [
        gradtx.apply_if_finite(gradtx.adam(1e-3), max_consecutive_errors=5),
        gradtx.apply_if_finite(
            gradtx.chain(gradtx.trace(0.9), gradtx.scale_by_learning_rate(0.1)), 0
        ),
        gradtx.apply_if_finite(gradtx.apply_if_finite(gradtx.sgd(0.1, momentum=0.9), 1), 10),
    ],
}
