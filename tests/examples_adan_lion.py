"""Config and contract examples for Adan, Lion, NovoGrad and the optimistic methods."""

import gradtx

SCHEDULE = gradtx.linear_schedule(1e-2, 1e-3, 50)

EXAMPLES = {
    "scale_by_adan": [
        gradtx.scale_by_adan(),
        gradtx.scale_by_adan(0.9, 0.8, 0.95, eps=1e-6, eps_root=1e-8),
    ],
    "adan": [
        gradtx.adan(1e-2),
        gradtx.adan(SCHEDULE, b3=0.9, weight_decay=0.02, mask={"w": True, "b": False}),
    ],
    "scale_by_lion": [
        gradtx.scale_by_lion(),
        gradtx.scale_by_lion(0.8, 0.95, "bfloat16", mode="smooth", smooth_beta=2.0),
        gradtx.scale_by_lion(mode="refined"),
    ],
    "lion": [
        gradtx.lion(3e-4),
        gradtx.lion(SCHEDULE, b2=0.98, mu_dtype="bfloat16", weight_decay=0.1, mask={"w": True}),
    ],
    "scale_by_novograd": [
        gradtx.scale_by_novograd(),
        gradtx.scale_by_novograd(0.8, 0.5, 1e-6, 1e-8, 0.01, "bfloat16"),
    ],
    "novograd": [
        gradtx.novograd(1e-2),
        gradtx.novograd(SCHEDULE, b1=0.95, eps=1e-8, weight_decay=1e-3),
    ],
    "scale_by_optimistic_gradient": [
        gradtx.scale_by_optimistic_gradient(),
        gradtx.scale_by_optimistic_gradient(0.5, 2.0),
    ],
    "optimistic_gradient_descent": [
        gradtx.optimistic_gradient_descent(1e-2),
        gradtx.optimistic_gradient_descent(SCHEDULE, alpha=0.5, beta=0.2),
    ],
    "optimistic_adam": [
        gradtx.optimistic_adam(1e-2),
        gradtx.optimistic_adam(
            1e-3, 0.5, b1=0.8, eps_root=1e-8, mu_dtype="bfloat16", nesterov=False
        ),
    ],
    "optimistic_adam_v2": [
        gradtx.optimistic_adam_v2(1e-2),
        gradtx.optimistic_adam_v2(
            SCHEDULE, alpha=0.5, beta=2.0, b2=0.99, mu_dtype="bfloat16", nesterov=False
        ),
    ],
}
