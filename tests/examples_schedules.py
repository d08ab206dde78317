"""Config round-trip and contract examples for the schedules catalogue and reduce_on_plateau.

Each schedule's first example is read at the contract test's steps (0, 1, 5, 10,
99, 150, 1000, 2**31 - 1), so its boundaries sit among them.
"""

import gradtx

_CYCLES = (
    gradtx.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100),
    gradtx.warmup_cosine_decay_schedule(0.1, 0.5, 5, 50, end_value=0.01, exponent=2.0),
)

EXAMPLES = {
    "cosine_onecycle_schedule": [
        gradtx.cosine_onecycle_schedule(1000, 0.1, pct_start=0.1),
        gradtx.cosine_onecycle_schedule(100, 1.0),
    ],
    "linear_onecycle_schedule": [
        gradtx.linear_onecycle_schedule(1000, 0.1, 0.1, 0.5, 10.0, 100.0),
        gradtx.linear_onecycle_schedule(100, 1.0),
    ],
    "piecewise_interpolate_schedule": [
        gradtx.piecewise_interpolate_schedule("cosine", 1.0, {10: 0.5, 150: 0.1, 1000: 2.0}),
        gradtx.piecewise_interpolate_schedule("linear", 0.5),
        gradtx.piecewise_interpolate_schedule("linear", 1.0, {5: 0.0, 1: 3.0}),
    ],
    "polynomial_schedule": [
        gradtx.polynomial_schedule(1.0, 0.01, 2.0, 100, transition_begin=5),
        gradtx.polynomial_schedule(0.0, 1.0, 0.5, 50),
    ],
    "reduce_on_plateau": [
        gradtx.reduce_on_plateau(),
        gradtx.reduce_on_plateau(0.5, 3, 1e-3, 1e-6, 2, 4, 1e-3),
    ],
    "sgdr_schedule": [
        gradtx.sgdr_schedule(_CYCLES),
        gradtx.sgdr_schedule(
            [{"init_value": 0.0, "peak_value": 1e-3, "warmup_steps": 0, "decay_steps": 30}]
        ),
    ],
    "warmup_constant_schedule": [gradtx.warmup_constant_schedule(0.0, 1e-3, 10)],
    "warmup_exponential_decay_schedule": [
        gradtx.warmup_exponential_decay_schedule(
            0.0, 1e-3, 10, 100, 0.5, transition_begin=5, staircase=True, end_value=1e-5
        ),
        gradtx.warmup_exponential_decay_schedule(0.5, 1.0, 0, 10, 1.5, end_value=2.0),
    ],
    "warmup_rsqrt_schedule": [
        gradtx.warmup_rsqrt_schedule(1e-3, 10),
        gradtx.warmup_rsqrt_schedule(1e-3, 0, init_value=0.0, shift=100),
    ],
    "wsd_schedule": [
        gradtx.wsd_schedule(0.0, 1e-3, 10, 1000, 1e-5, decay_shape="1-sqrt"),
        gradtx.wsd_schedule(1e-4, 1e-3, 0, 200, decay_steps=50, decay_shape="cosine"),
        gradtx.wsd_schedule(0.0, 1.0, 5, 100, decay_fraction=0.0),
    ],
}
