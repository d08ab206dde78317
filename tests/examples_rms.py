"""Config and contract examples for the RMS family: Adagrad, RMSProp, Adadelta, SM3, Adafactor."""

import gradtx

WARMUP = gradtx.linear_schedule(0.0, 1e-2, transition_steps=10)

EXAMPLES = {
    "adadelta": [
        gradtx.adadelta(1.0),
        gradtx.adadelta(
            WARMUP, rho=0.95, eps=1e-5, weight_decay=1e-3, weight_decay_mask={"w": True, "b": False}
        ),
        gradtx.adadelta(),
    ],
    "adafactor": [
        gradtx.adafactor(1e-2, min_dim_size_to_factor=2),
        gradtx.adafactor(
            WARMUP,
            min_dim_size_to_factor=2,
            decay_rate=0.7,
            decay_offset=3,
            multiply_by_parameter_scale=False,
            clipping_threshold=None,
            momentum=0.9,
            dtype_momentum="bfloat16",
            weight_decay_rate=1e-3,
            eps=1e-20,
            weight_decay_mask={"w": True, "b": False},
        ),
        gradtx.adafactor(factored=False),
    ],
    "adagrad": [
        gradtx.adagrad(0.1),
        gradtx.adagrad(WARMUP, initial_accumulator_value=0.5, eps=1e-6),
    ],
    "rmsprop": [
        gradtx.rmsprop(1e-2),
        gradtx.rmsprop(
            WARMUP,
            decay=0.95,
            eps=1e-6,
            initial_scale=1.0,
            eps_in_sqrt=False,
            centered=True,
            momentum=0.9,
            nesterov=True,
            bias_correction=True,
        ),
        gradtx.rmsprop(1e-3, momentum=0.5, bias_correction=True),
    ],
    "scale_by_adadelta": [gradtx.scale_by_adadelta(), gradtx.scale_by_adadelta(0.5, 1e-4)],
    "scale_by_factored_rms": [
        gradtx.scale_by_factored_rms(min_dim_size_to_factor=2),
        gradtx.scale_by_factored_rms(False, 0.6, 2, 1, 1e-20),
    ],
    "scale_by_param_block_rms": [
        gradtx.scale_by_param_block_rms(),
        gradtx.scale_by_param_block_rms(0.5),
    ],
    "scale_by_rms": [
        gradtx.scale_by_rms(),
        gradtx.scale_by_rms(0.99, 1e-6, 0.1, eps_in_sqrt=False, bias_correction=True),
    ],
    "scale_by_rss": [gradtx.scale_by_rss(), gradtx.scale_by_rss(0.0, 1e-5)],
    "scale_by_sm3": [gradtx.scale_by_sm3(), gradtx.scale_by_sm3(0.5, 0.99, 1e-6)],
    "scale_by_stddev": [
        gradtx.scale_by_stddev(),
        gradtx.scale_by_stddev(0.95, 1e-6, 1.0, eps_in_sqrt=False, bias_correction=True),
    ],
    "sm3": [gradtx.sm3(0.1), gradtx.sm3(WARMUP, momentum=0.5)],
}
