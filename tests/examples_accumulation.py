"""Config round-trip examples for the accumulation family."""

import jax.numpy as jnp

import gradtx

EXAMPLES = {
    "MultiSteps": [
        gradtx.MultiSteps(gradtx.adam(1e-3), 4),
        gradtx.MultiSteps(
            gradtx.sgd(0.1, momentum=0.9),
            gradtx.piecewise_constant_schedule(2.0, {100: 2.0}),
            use_grad_mean=False,
            should_skip_update_fn=gradtx.skip_not_finite(),
            accumulator_dtype=jnp.bfloat16,
        ),
        gradtx.MultiSteps(gradtx.adamw(1e-3), 2, True, gradtx.skip_large_updates(100.0), None),
    ],
    "accumulate": [
        gradtx.accumulate(gradtx.adam(1e-3), 8),
        gradtx.accumulate(
            gradtx.chain(gradtx.apply_every(2), gradtx.sgd(0.1)),
            every_k=3,
            use_grad_mean=False,
            should_skip_update_fn=gradtx.skip_large_updates(4.0),
            accumulator_dtype="float32",
        ),
    ],
    "apply_every": [gradtx.apply_every(), gradtx.apply_every(4)],
    "skip_large_updates": [gradtx.skip_large_updates(1.0), gradtx.skip_large_updates(0.5)],
    "skip_not_finite": [gradtx.skip_not_finite()],
}
