"""Every bad input gives a clear error that names the argument or the key path."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
import pytest

import gradtx

GRADTX_DIR = os.path.dirname(gradtx.__file__)


def _raised_by_gradtx(info: pytest.ExceptionInfo) -> None:
    """The error is gradtx's own ValueError, not a traceback from inside JAX."""
    assert type(info.value) is ValueError
    raised_in = str(info.traceback[-1].path)
    assert raised_in.startswith(GRADTX_DIR + os.sep), f"raised in {raised_in}"
    message = str(info.value)
    for jax_phrase in ("Custom node type mismatch", "Dict key mismatch", "tree_map"):
        assert jax_phrase not in message


# --- hyperparameters, checked when the object is built ---------------------------

LEARNING_RATE_TAKERS: dict[str, Callable[[Any], Any]] = {
    "sgd": lambda lr: gradtx.sgd(lr),
    "sgd_momentum": lambda lr: gradtx.sgd(lr, momentum=0.9),
    "adam": lambda lr: gradtx.adam(lr),
    "adamw": lambda lr: gradtx.adamw(lr),
    "nadam": lambda lr: gradtx.nadam(lr),
    "nadamw": lambda lr: gradtx.nadamw(lr),
    "scale_by_learning_rate": lambda lr: gradtx.scale_by_learning_rate(lr),
}


@pytest.mark.parametrize("name", sorted(LEARNING_RATE_TAKERS))
@pytest.mark.parametrize("value", [-0.1, -1e-8, float("nan")])
def test_negative_learning_rate(name, value):
    pattern = rf"learning_rate must be >= 0, got {re.escape(repr(value))}$"
    with pytest.raises(ValueError, match=pattern) as info:
        LEARNING_RATE_TAKERS[name](value)
    _raised_by_gradtx(info)


def test_negative_learning_rate_in_an_array_is_named():
    with pytest.raises(ValueError, match=r"learning_rate must be >= 0, got .*-0\.1"):
        gradtx.adam(jnp.array([0.1, -0.1]))


ADAM_LIKE: dict[str, Callable[..., Any]] = {
    "scale_by_adam": lambda **kw: gradtx.scale_by_adam(**kw),
    "adam": lambda **kw: gradtx.adam(1e-3, **kw),
    "adamw": lambda **kw: gradtx.adamw(1e-3, **kw),
    "nadam": lambda **kw: gradtx.nadam(1e-3, **kw),
    "nadamw": lambda **kw: gradtx.nadamw(1e-3, **kw),
}


@pytest.mark.parametrize("name", sorted(ADAM_LIKE))
@pytest.mark.parametrize("argument", ["b1", "b2"])
@pytest.mark.parametrize("value", [1.0, -0.1, 1.5])
def test_decay_rates_outside_unit_interval(name, argument, value):
    pattern = rf"{argument} must be in \[0, 1\), got {re.escape(repr(value))}"
    with pytest.raises(ValueError, match=pattern) as info:
        ADAM_LIKE[name](**{argument: value})
    _raised_by_gradtx(info)


@pytest.mark.parametrize("name", sorted(ADAM_LIKE))
@pytest.mark.parametrize("argument", ["eps", "eps_root"])
def test_negative_epsilons(name, argument):
    with pytest.raises(ValueError, match=rf"{argument} must be >= 0, got -1e-08") as info:
        ADAM_LIKE[name](**{argument: -1e-8})
    _raised_by_gradtx(info)


def test_valid_boundary_values_are_accepted():
    gradtx.adam(0.0, b1=0.0, b2=0.0, eps=0.0, eps_root=0.0)
    gradtx.trace(0.0)
    gradtx.adamw(1e-3, weight_decay=0.0)
    gradtx.scale_by_adam(b1=0.999999, b2=0.999999)


def test_negative_trace_decay():
    with pytest.raises(ValueError, match=r"decay must be >= 0, got -0\.5") as info:
        gradtx.trace(-0.5)
    _raised_by_gradtx(info)
    with pytest.raises(ValueError, match=r"momentum must be >= 0, got -0\.5"):
        gradtx.sgd(0.1, momentum=-0.5)


@pytest.mark.parametrize(
    "build",
    [
        lambda wd: gradtx.add_decayed_weights(wd),
        lambda wd: gradtx.adamw(1e-3, weight_decay=wd),
        lambda wd: gradtx.nadamw(1e-3, weight_decay=wd),
        lambda wd: gradtx.sgd(0.1, weight_decay=wd),
    ],
    ids=["add_decayed_weights", "adamw", "nadamw", "sgd"],
)
def test_negative_weight_decay(build):
    with pytest.raises(ValueError, match=r"weight_decay must be >= 0, got -0\.01") as info:
        build(-0.01)
    _raised_by_gradtx(info)


def test_nan_without_bounds_is_a_value_error_naming_it():
    # A hyperparameter with no range (scale's step) still refuses NaN, by name.
    with pytest.raises(ValueError, match=r"step_size must be a number, not NaN, got nan"):
        gradtx.scale(float("nan"))


def test_non_numeric_hyperparameter_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="b1"):
        gradtx.scale_by_adam(b1="0.9")


# --- update() with gradients that do not fit the state --------------------------

PARAMS = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}, "out": jnp.ones(3)}

MISMATCHES = {
    "missing": (
        {"dense": {"kernel": jnp.ones((2, 3))}, "out": jnp.ones(3)},
        r"\['dense'\]\['bias'\] is missing from the gradients",
    ),
    "extra": (
        {
            "dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3), "scale": jnp.ones(3)},
            "out": jnp.ones(3),
        },
        r"\['dense'\]\['scale'\] is in the gradients but not in the",
    ),
    "shape": (
        {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(4)}, "out": jnp.ones(3)},
        r"\['dense'\]\['bias'\] has shape \(4,\) in the gradients but \(3,\)",
    ),
    "list_instead_of_dict": (
        {"dense": [jnp.ones((2, 3)), jnp.ones(3)], "out": jnp.ones(3)},
        r"\['dense'\]\['bias'\] is missing from the gradients",
    ),
}

OPTIMIZERS = {
    "adam": gradtx.adam(1e-3),
    "sgd_momentum": gradtx.sgd(0.1, momentum=0.9),
    "adamw": gradtx.adamw(1e-3, weight_decay=0.1),
    "chain": gradtx.chain(gradtx.trace(0.9), gradtx.scale_by_learning_rate(0.1)),
    "chain_with_optax": gradtx.chain(
        optax.clip_by_global_norm(1.0), gradtx.scale_by_adam(), gradtx.scale_by_learning_rate(0.1)
    ),
}


def _update(tx: Any, grads: Any, state: Any, params: Any) -> Any:
    return tx.update(grads, state, params)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("mismatch", sorted(MISMATCHES))
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_update_with_mismatched_gradients_names_the_key_path(name, mismatch, jit):
    tx = OPTIMIZERS[name]
    grads, pattern = MISMATCHES[mismatch]
    state = tx.init(PARAMS)
    update = jax.jit(_update) if jit else _update
    with pytest.raises(ValueError, match=pattern) as info:
        update(tx, grads, state, PARAMS)
    _raised_by_gradtx(info)


def test_state_of_another_optimizer_is_rejected_by_chain():
    tx = gradtx.chain(gradtx.trace(0.9), gradtx.scale_by_learning_rate(0.1))
    wrong_state = gradtx.chain(gradtx.scale_by_learning_rate(0.1)).init(PARAMS)
    with pytest.raises(ValueError, match="state does not belong to this chain of 2"):
        tx.update(PARAMS, wrong_state, PARAMS)


# --- params required ---------------------------------------------------------------


@pytest.mark.parametrize(
    "tx",
    [
        gradtx.add_decayed_weights(0.1),
        gradtx.adamw(1e-3),
        gradtx.nadamw(1e-3),
        gradtx.sgd(0.1, weight_decay=1e-4),
        gradtx.chain(gradtx.scale_by_adam(), gradtx.add_decayed_weights(0.1)),
    ],
    ids=["add_decayed_weights", "adamw", "nadamw", "sgd_weight_decay", "chain"],
)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_update_without_params_says_params_are_required(tx, jit):
    def update(tx, grads, state):
        return tx.update(grads, state)

    update = jax.jit(update) if jit else update
    pattern = r"needs the current parameters.*update\(updates, state, params\)"
    with pytest.raises(ValueError, match=pattern) as info:
        update(tx, PARAMS, tx.init(PARAMS))
    _raised_by_gradtx(info)


def test_update_without_params_is_fine_when_nothing_needs_them():
    for tx in (gradtx.adam(1e-3), gradtx.sgd(0.1, momentum=0.9), gradtx.sgd(0.1, weight_decay=0.0)):
        tx.update(PARAMS, tx.init(PARAMS))


# --- masks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mask, pattern",
    [
        (
            {"dense": {"kernel": True}, "out": True},
            r"\['dense'\]\['bias'\] is in the parameters but not in the mask",
        ),
        (
            {"dense": {"kernel": True, "bias": False, "scale": True}, "out": True},
            r"\['dense'\]\['scale'\] is in the mask but not in the parameters",
        ),
        (
            lambda params: {"dense": {"kernel": True, "bias": False}},
            r"\['out'\] is in the parameters but not in the mask",
        ),
        ({"encoder": True}, r"\['encoder'\] is in the mask but not in the parameters"),
    ],
    ids=["tree_missing", "tree_extra", "callable_missing", "wrong_names"],
)
@pytest.mark.parametrize(
    "build",
    [
        lambda mask: gradtx.add_decayed_weights(0.1, mask),
        lambda mask: gradtx.adamw(1e-3, mask=mask),
    ],
    ids=["add_decayed_weights", "adamw"],
)
def test_mask_that_does_not_fit_names_a_path(build, mask, pattern):
    tx = build(mask)
    with pytest.raises(ValueError, match=pattern) as info:
        tx.update(PARAMS, tx.init(PARAMS), PARAMS)
    _raised_by_gradtx(info)


def test_mask_prefix_is_not_an_error():
    tx = gradtx.add_decayed_weights(0.5, mask={"dense": False, "out": True})
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, PARAMS), tx.init(PARAMS), PARAMS)
    assert float(updates["out"][0]) == 0.5
    assert float(updates["dense"]["kernel"][0, 0]) == 0.0


# --- chain -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "member, shown",
    [
        (3, "3"),
        ("adam", "'adam'"),
        (lambda updates: updates, "lambda"),
        (gradtx.constant_schedule(0.1), "constant_schedule"),
        (None, "None"),
    ],
    ids=["int", "str", "function", "schedule", "none"],
)
def test_chain_of_a_non_transformation_is_a_type_error(member, shown):
    pattern = rf"chain argument 1 must be a gradient transformation.*{shown}"
    with pytest.raises(TypeError, match=pattern):
        gradtx.chain(gradtx.identity(), member)


@pytest.mark.parametrize("cls", [gradtx.adam, gradtx.identity, optax.GradientTransformation])
def test_chain_of_a_class_instead_of_an_instance_is_a_type_error(cls):
    pattern = rf"chain argument 0 .*did you mean {cls.__name__}\(\.\.\.\)"
    with pytest.raises(TypeError, match=pattern):
        gradtx.chain(cls)
    with pytest.raises(TypeError, match="must have init and update methods"):
        gradtx.foreign(cls)


def test_chain_with_unknown_keywords_is_a_type_error():
    with pytest.raises(TypeError, match="positional"):
        gradtx.chain(gradtx.identity(), members=())


# --- apply_updates -----------------------------------------------------------------


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(
    "updates, pattern",
    [
        (
            {"dense": {"kernel": jnp.ones((2, 3))}, "out": jnp.ones(3)},
            r"\['dense'\]\['bias'\] is missing from the updates",
        ),
        (
            {
                "dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
                "out": jnp.ones(3),
                "head": jnp.ones(1),
            },
            r"\['head'\] is in the updates but not in the parameters",
        ),
        (
            {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(3)}, "out": jnp.ones(3)},
            r"\['dense'\]\['kernel'\] has shape \(3, 2\) in the updates but \(2, 3\)",
        ),
    ],
    ids=["missing", "extra", "shape"],
)
def test_apply_updates_with_mismatched_trees_names_the_key_path(updates, pattern, jit):
    apply = jax.jit(gradtx.apply_updates) if jit else gradtx.apply_updates
    with pytest.raises(ValueError, match=pattern) as info:
        apply(PARAMS, updates)
    _raised_by_gradtx(info)
