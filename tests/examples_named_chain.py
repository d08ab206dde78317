"""Config round-trip examples for named_chain (params like {"w": f32[3,2], "b": f32[2]})."""

import gradtx

EXAMPLES = {
    "named_chain": [
        gradtx.named_chain(),
        gradtx.named_chain(
            ("clip_and_momentum", gradtx.chain(gradtx.trace(0.9, nesterov=True))),
            ("lr", gradtx.scale_by_learning_rate(gradtx.linear_schedule(0.1, 0.0, 100))),
        ),
    ],
}
