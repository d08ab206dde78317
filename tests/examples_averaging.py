"""Config round-trip examples for the averaging family: ema and lookahead."""

import jax.numpy as jnp

import gradtx

EXAMPLES = {
    "ema": [
        gradtx.ema(0.9),
        gradtx.ema(0.99, debias=False, accumulator_dtype=jnp.bfloat16),
        gradtx.ema(0.5, accumulator_dtype="float32"),
    ],
    "lookahead": [
        gradtx.lookahead(gradtx.sgd(0.1), sync_period=5, slow_step_size=0.5),
        gradtx.lookahead(
            gradtx.adam(gradtx.linear_schedule(1e-3, 1e-4, 100), b2=0.95),
            sync_period=3,
            slow_step_size=0.8,
            reset_state=True,
        ),
        gradtx.lookahead(gradtx.chain(gradtx.trace(0.9), gradtx.scale(-0.1)), 1, 0.25),
    ],
}
