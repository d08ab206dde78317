"""Config round-trip examples for Optax's contrib optimizers: schedule-free, ADOPT, AdEMAMix."""

import jax.numpy as jnp

import gradtx

WARMUP = gradtx.linear_schedule(0.0, 1e-2, 10)

EXAMPLES = {
    "schedule_free": [
        gradtx.schedule_free(gradtx.sgd(0.1), learning_rate=0.1),
        gradtx.schedule_free(
            gradtx.adam(WARMUP, b1=0.0, b2=0.99),
            WARMUP,
            b1=0.95,
            weight_lr_power=1.0,
            state_dtype=jnp.bfloat16,
        ),
    ],
    "schedule_free_sgd": [
        gradtx.schedule_free_sgd(),
        gradtx.schedule_free_sgd(
            0.5,
            warmup_steps=10,
            b1=0.95,
            weight_decay=1e-3,
            weight_lr_power=1.0,
            state_dtype="bfloat16",
        ),
    ],
    "schedule_free_adamw": [
        gradtx.schedule_free_adamw(),
        gradtx.schedule_free_adamw(
            1e-2,
            warmup_steps=5,
            b1=0.95,
            b2=0.99,
            eps=1e-6,
            weight_decay=0.01,
            weight_lr_power=1.5,
            state_dtype="float32",
        ),
    ],
    "scale_by_adopt": [
        gradtx.scale_by_adopt(),
        gradtx.scale_by_adopt(
            0.8,
            0.99,
            1e-5,
            "bfloat16",
            nesterov=True,
            clip_value_fn=gradtx.linear_schedule(1.0, 5.0, 100),
        ),
        gradtx.scale_by_adopt(b2=0.999, use_clipping=False),
    ],
    "adopt": [
        gradtx.adopt(1e-3),
        gradtx.adopt(
            gradtx.cosine_decay_schedule(1e-3, 100),
            b1=0.5,
            b2=0.99,
            eps=1e-7,
            mu_dtype=jnp.bfloat16,
            nesterov=True,
            use_clipping=False,
        ),
    ],
    "scale_by_ademamix": [
        gradtx.scale_by_ademamix(),
        gradtx.scale_by_ademamix(
            0.8,
            0.99,
            gradtx.linear_schedule(0.9, 0.999, 50),
            gradtx.linear_schedule(0.0, 8.0, 50),
            1e-6,
            1e-10,
            "bfloat16",
        ),
    ],
    "ademamix": [
        gradtx.ademamix(1e-3),
        gradtx.ademamix(
            WARMUP,
            b3=0.999,
            alpha=gradtx.linear_schedule(0.0, 5.0, 100),
            weight_decay=0.01,
            mask=gradtx.path_mask(exclude=[r"b$"]),
        ),
    ],
    "scale_by_simplified_ademamix": [
        gradtx.scale_by_simplified_ademamix(),
        gradtx.scale_by_simplified_ademamix(
            0.9, 0.99, gradtx.linear_schedule(0.0, 10.0, 100), 1e-6, 1e-9
        ),
    ],
    "simplified_ademamix": [
        gradtx.simplified_ademamix(1e-4),
        gradtx.simplified_ademamix(
            WARMUP, b1=0.9, alpha=2.0, weight_decay=1e-3, mask={"w": True, "b": False}
        ),
    ],
}
