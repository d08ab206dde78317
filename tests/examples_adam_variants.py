"""Config round-trip and contract examples for the Adam variants.

AdaBelief, AdaMax(W), AMSGrad, RAdam and Yogi, with their scale_by_* pieces.
"""

import jax.numpy as jnp

import gradtx

SCHEDULE = gradtx.cosine_decay_schedule(2e-3, decay_steps=100, alpha=0.1)

EXAMPLES = {
    "scale_by_belief": [
        gradtx.scale_by_belief(),
        gradtx.scale_by_belief(0.8, 0.95, eps=1e-8, eps_root=0.0, nesterov=True),
    ],
    "adabelief": [
        gradtx.adabelief(1e-3),
        gradtx.adabelief(SCHEDULE, b1=0.85, b2=0.99, eps=1e-12, eps_root=1e-12, nesterov=True),
    ],
    "scale_by_adamax": [gradtx.scale_by_adamax(), gradtx.scale_by_adamax(0.8, 0.99, 1e-6)],
    "adamax": [gradtx.adamax(2e-3), gradtx.adamax(SCHEDULE, b1=0.8, b2=0.99, eps=1e-6)],
    "adamaxw": [
        gradtx.adamaxw(2e-3),
        gradtx.adamaxw(
            SCHEDULE,
            b2=0.99,
            weight_decay=gradtx.linear_schedule(0.0, 0.1, 50),
            mask={"w": True, "b": False},
        ),
        gradtx.adamaxw(1e-3, weight_decay=0.05, mask=gradtx.path_mask(exclude=[r"bias$"])),
    ],
    "scale_by_amsgrad": [
        gradtx.scale_by_amsgrad(),
        gradtx.scale_by_amsgrad(
            0.8,
            0.99,
            1e-6,
            1e-9,
            mu_dtype=jnp.bfloat16,
            bias_correction_mu=False,
            bias_correction_nu=False,
        ),
    ],
    "amsgrad": [
        gradtx.amsgrad(1e-3),
        gradtx.amsgrad(SCHEDULE, b1=0.8, b2=0.99, eps_root=1e-9, bias_correction_nu=False),
    ],
    "scale_by_radam": [
        gradtx.scale_by_radam(),
        gradtx.scale_by_radam(0.8, 0.99, 1e-6, 1e-9, threshold=4.5, nesterov=True),
    ],
    "radam": [
        gradtx.radam(1e-3),
        gradtx.radam(SCHEDULE, b2=0.99, threshold=6.0, nesterov=True),
    ],
    "scale_by_yogi": [
        gradtx.scale_by_yogi(),
        gradtx.scale_by_yogi(0.8, 0.99, 1e-4, eps_root=1e-9, initial_accumulator_value=1e-3),
    ],
    "yogi": [gradtx.yogi(1e-2), gradtx.yogi(SCHEDULE, b1=0.8, b2=0.99, eps=1e-4)],
}
