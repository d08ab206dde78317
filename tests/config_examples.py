"""Example instances of every registered name, shared by the config and contract tests.

The core names are listed here; each family adds its own in a sibling module
``examples_<family>.py`` holding an ``EXAMPLES`` dict, merged in below.
"""

import importlib
import pathlib

import jax.numpy as jnp

import gradtx

# One or more instances for every registered name, away from the defaults where
# possible. A newly registered class without an entry here fails
# test_every_registered_name_has_an_example, so round-trip coverage cannot lapse.
DECAY = gradtx.exponential_decay(
    init_value=1e-3,
    transition_steps=100,
    decay_rate=0.9,
    transition_begin=5,
    staircase=True,
    end_value=1e-5,
)
EXAMPLES = {
    "adam": [
        gradtx.adam(1e-3),
        gradtx.adam(
            DECAY, b1=0.8, b2=0.95, eps=1e-6, eps_root=1e-9, mu_dtype=jnp.bfloat16, nesterov=True
        ),
    ],
    "adamw": [
        gradtx.adamw(1e-3),
        gradtx.adamw(
            DECAY, weight_decay=0.05, mask=gradtx.path_mask(exclude=[r"bias$", r"scale$"])
        ),
        gradtx.adamw(
            3e-4,
            weight_decay=gradtx.linear_schedule(0.0, 0.1, 50),
            mask={"w": True, "b": False},
            nesterov=True,
        ),
    ],
    "add_decayed_weights": [
        gradtx.add_decayed_weights(0.01),
        gradtx.add_decayed_weights(DECAY, mask=gradtx.path_mask(include=["kernel"])),
    ],
    "chain": [
        gradtx.chain(),
        gradtx.chain(gradtx.scale_by_adam(b2=0.95), gradtx.scale_by_learning_rate(DECAY)),
        gradtx.chain(gradtx.chain(gradtx.identity()), gradtx.adamw(1e-3)),
    ],
    "constant_schedule": [gradtx.constant_schedule(0.25)],
    "cosine_decay_schedule": [
        gradtx.cosine_decay_schedule(1.0, decay_steps=100, alpha=0.1, exponent=2.0)
    ],
    "exponential_decay": [gradtx.exponential_decay(1.0, 10, 0.5), DECAY],
    "identity": [gradtx.identity()],
    "join_schedules": [
        gradtx.join_schedules(
            [gradtx.linear_schedule(0.0, 1.0, 10), gradtx.cosine_decay_schedule(1.0, 90)], [10]
        ),
        gradtx.join_schedules(
            [
                gradtx.constant_schedule(1.0),
                gradtx.constant_schedule(0.5),
                gradtx.constant_schedule(0.1),
            ],
            [100, 200],
        ),
    ],
    "linear_schedule": [gradtx.linear_schedule(0.0, 1.0, transition_steps=10, transition_begin=3)],
    "nadam": [gradtx.nadam(2e-3, b2=0.99, mu_dtype="bfloat16")],
    "nadamw": [gradtx.nadamw(2e-3, weight_decay=0.1, mask=gradtx.path_mask(exclude=["bias"]))],
    "path_mask": [gradtx.path_mask(), gradtx.path_mask(include=["^encoder/"], exclude=[r"bias$"])],
    "piecewise_constant_schedule": [
        gradtx.piecewise_constant_schedule(0.1),
        gradtx.piecewise_constant_schedule(0.1, {2000: 0.1, 1000: 0.5}),
    ],
    "scale": [gradtx.scale(-0.5)],
    "scale_by_adam": [
        gradtx.scale_by_adam(),
        gradtx.scale_by_adam(0.5, 0.9, 1e-3, 1e-10, "bfloat16", "float32", nesterov=True),
    ],
    "scale_by_learning_rate": [
        gradtx.scale_by_learning_rate(0.1),
        gradtx.scale_by_learning_rate(DECAY, flip_sign=False),
    ],
    "scale_by_schedule": [gradtx.scale_by_schedule(DECAY)],
    "sgd": [
        gradtx.sgd(0.1),
        gradtx.sgd(0.1, momentum=0.9, nesterov=True),
        gradtx.sgd(0.1, momentum=0.9, weight_decay=5e-4),
        gradtx.sgd(0.1, 0.9, True, "bfloat16", weight_decay=0.0),
    ],
    "trace": [gradtx.trace(0.9), gradtx.trace(0.5, nesterov=True, accumulator_dtype="bfloat16")],
    "warmup_cosine_decay_schedule": [
        gradtx.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100, end_value=1e-5, exponent=1.5)
    ],
}


def _merge_family_examples() -> None:
    for path in sorted(pathlib.Path(__file__).parent.glob("examples_*.py")):
        family = importlib.import_module(path.stem).EXAMPLES
        clashes = set(family) & set(EXAMPLES)
        assert not clashes, f"{path.name} repeats examples for {sorted(clashes)}"
        EXAMPLES.update(family)


_merge_family_examples()
