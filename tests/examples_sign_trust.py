"""Config round-trip and contract examples: sign, trust-ratio, Polyak and Rprop families."""

import gradtx

WARMUP = gradtx.linear_schedule(0.0, 1e-2, transition_steps=20, transition_begin=2)
DECAY = gradtx.exponential_decay(1e-2, transition_steps=10, decay_rate=0.9, end_value=1e-4)

EXAMPLES = {
    "scale_by_sign": [gradtx.scale_by_sign()],
    "sign_sgd": [gradtx.sign_sgd(0.01), gradtx.sign_sgd(WARMUP)],
    "signum": [
        gradtx.signum(0.01),
        gradtx.signum(DECAY, beta=0.5, accumulator_dtype="bfloat16"),
    ],
    "scale_by_trust_ratio": [
        gradtx.scale_by_trust_ratio(),
        gradtx.scale_by_trust_ratio(min_norm=1e-3, trust_coefficient=0.5, eps=1e-8),
    ],
    "lars": [
        gradtx.lars(0.1),
        gradtx.lars(
            WARMUP,
            weight_decay=1e-4,
            weight_decay_mask={"w": True, "b": False},
            trust_coefficient=0.01,
            eps=1e-8,
            trust_ratio_mask=gradtx.path_mask(exclude=[r"^b$"]),
            momentum=0.8,
            nesterov=True,
        ),
        gradtx.lars(0.1, weight_decay=DECAY, weight_decay_mask=None, trust_ratio_mask=False),
    ],
    "lamb": [
        gradtx.lamb(1e-3),
        gradtx.lamb(
            DECAY,
            b1=0.8,
            b2=0.99,
            eps=1e-8,
            eps_root=1e-10,
            weight_decay=0.01,
            mask=gradtx.path_mask(exclude=[r"^b$"]),
        ),
    ],
    "fromage": [gradtx.fromage(0.01), gradtx.fromage(WARMUP, min_norm=1e-5)],
    "scale_by_polyak": [
        gradtx.scale_by_polyak(),
        gradtx.scale_by_polyak(f_min=-1.0, max_learning_rate=0.5, eps=1e-8, variant="sps+"),
    ],
    "polyak_sgd": [
        gradtx.polyak_sgd(),
        gradtx.polyak_sgd(0.5, scaling=DECAY, f_min=-1.0, eps=1e-8, variant="sps+"),
    ],
    "scale_by_rprop": [
        gradtx.scale_by_rprop(0.01),
        gradtx.scale_by_rprop(
            0.1, eta_minus=0.4, eta_plus=1.3, min_step_size=1e-5, max_step_size=1.0
        ),
    ],
    "rprop": [
        gradtx.rprop(0.01),
        gradtx.rprop(0.1, eta_minus=0.4, eta_plus=1.3, min_step_size=1e-5, max_step_size=1.0),
    ],
}
