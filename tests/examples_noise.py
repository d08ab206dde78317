"""Config round-trip examples for the noise family: add_noise with each kind of key, noisy_sgd."""

import jax
import numpy as np

import gradtx

EXAMPLES = {
    "add_noise": [
        gradtx.add_noise(0.01, 0.55, 0),
        gradtx.add_noise(eta=0.3, gamma=1.0, key=jax.random.key(42)),
        gradtx.add_noise(0.1, 0.0, key=np.array([7, 11], np.uint32)),
        gradtx.add_noise(0.05, 0.5, key=jax.random.key(3, impl="rbg")),
        gradtx.add_noise(0.02, 0.55, key=123, key_impl="threefry2x32"),
    ],
    "noisy_sgd": [
        gradtx.noisy_sgd(0.01, key=0),
        gradtx.noisy_sgd(
            gradtx.linear_schedule(0.1, 0.01, 50), eta=0.1, gamma=0.3, key=jax.random.key(5)
        ),
    ],
}
