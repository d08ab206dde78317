"""Bad numbers and dtypes are refused where they are given, naming the field and value.

Before these checks, ``learning_rate=inf``, a learning rate of shape (3,),
``mu_dtype="int8"``, ``eps: null`` or ``learning_rate: true`` all built an
optimizer that then trained wrong (or failed deep inside ``update``), and int32
params under sgd were silently never updated.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx import registry
from gradtx.aliases import Alias

PARAMS = {"w": jnp.ones(3), "b": jnp.zeros(2)}


@pytest.mark.parametrize(
    "build, field, shown",
    [
        (lambda: gradtx.sgd(float("inf")), "learning_rate", "inf"),
        (lambda: gradtx.adamw(1e-3, weight_decay=float("inf")), "weight_decay", "inf"),
        (lambda: gradtx.adam(1e-3, eps=-float("inf")), "eps", "-inf"),
        (lambda: gradtx.exponential_decay(float("inf"), 10, 0.9), "init_value", "inf"),
        (lambda: gradtx.sgd([0.1, 0.2]), "learning_rate", "[0.1, 0.2]"),
        (lambda: gradtx.sgd(float("nan")), "learning_rate", "nan"),
        (lambda: gradtx.adam(1e-3, b1=np.array([0.9, np.inf])), "b1", "inf"),
    ],
)
def test_unusable_numbers_are_refused_when_built(build, field, shown):
    with pytest.raises(ValueError, match=field) as error:
        build()
    assert shown in str(error.value)


@pytest.mark.parametrize(
    "tx, field, shown",
    [
        (gradtx.sgd(jnp.ones(3)), "learning_rate", "shape (3,)"),
        (gradtx.adam(1e-3, b1=np.array([0.9])), "b1", "shape (1,)"),
        (gradtx.adam(gradtx.exponential_decay(jnp.ones(2), 10, 0.9)), "init_value", "shape (2,)"),
        (gradtx.adam(1e-3, b2=None), "b2", "is None"),
        (gradtx.adamw(1e-3, eps=None), "eps", "is None"),
    ],
)
def test_arrays_and_none_are_refused_by_update(tx, field, shown):
    # They build: an array is a batch of values for jax.vmap (one per trial) and
    # None marks an unbatched field of an in_axes spec. Used unbatched, they fail
    # at the first update, eagerly or when traced, naming the field.
    state = tx.init(PARAMS)
    for update in (tx.update, jax.jit(tx.update)):
        with pytest.raises(ValueError, match=field) as error:
            update(PARAMS, state, PARAMS)
        assert shown in str(error.value)


def test_a_batched_optimizer_runs_under_vmap():
    batched = gradtx.sgd(jnp.array([0.1, 0.2, 0.3]))
    in_axes = gradtx.sgd(learning_rate=0)

    def step(tx):
        return tx.update(PARAMS, tx.init(PARAMS))[0]["w"]

    updates = jax.vmap(step, in_axes=(in_axes,))(batched)
    np.testing.assert_allclose(updates[:, 0], [-0.1, -0.2, -0.3], rtol=1e-6)


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: gradtx.sgd(True), "learning_rate"),
        (lambda: gradtx.adam("0.001"), "learning_rate"),
        (lambda: gradtx.adam(1e-3, eps=np.bool_(False)), "eps"),
    ],
)
def test_non_numbers_are_type_errors(build, field):
    with pytest.raises(TypeError, match=f"{field} must be a number"):
        build()


@pytest.mark.parametrize(
    "fields, path, shown",
    [
        ({"eps": None}, "eps", "got null"),
        ({"b1": None}, "b1", "got null"),
        ({"learning_rate": True}, "learning_rate", "True"),
        ({"learning_rate": [0.1, 0.2]}, "learning_rate", "0.1, 0.2"),
        ({"learning_rate": float("inf")}, "learning_rate", "inf"),
        ({"mu_dtype": "int8"}, "mu_dtype", "int8"),
        ({"mu_dtype": "no-such-type"}, "mu_dtype", "no-such-type"),
    ],
)
def test_config_fields_are_checked_when_built(fields, path, shown):
    config = {"name": "adam", "learning_rate": 1e-3, **fields}
    with pytest.raises(gradtx.ConfigError) as error:
        gradtx.from_config(config)
    assert error.value.path == path
    assert shown in str(error.value)


def test_a_config_override_of_a_nested_nan_is_one_clear_error():
    config = gradtx.to_config(gradtx.adam(gradtx.exponential_decay(1e-3, 10, 0.9)))
    with pytest.raises(gradtx.ConfigError, match=r"learning_rate\.init_value.*NaN"):
        gradtx.from_config(config, ["learning_rate.init_value=nan"])


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda dtype: gradtx.adam(1e-3, mu_dtype=dtype), "mu_dtype"),
        (lambda dtype: gradtx.scale_by_adam(nu_dtype=dtype), "nu_dtype"),
        (lambda dtype: gradtx.sgd(0.1, momentum=0.9, accumulator_dtype=dtype), "accumulator_dtype"),
        (lambda dtype: gradtx.ema(0.9, accumulator_dtype=dtype), "accumulator_dtype"),
    ],
)
@pytest.mark.parametrize("dtype", ["int8", jnp.int32, "bool"])
def test_state_dtypes_must_be_floating(build, field, dtype):
    with pytest.raises(ValueError, match=f"{field} must be a floating"):
        build(dtype)


def test_where_infinity_means_no_limit_it_is_allowed():
    tx = gradtx.chain(gradtx.clip_by_global_norm(float("inf")), gradtx.clip(float("inf")))
    updates, _ = tx.update(PARAMS, tx.init(PARAMS))
    np.testing.assert_array_equal(updates["w"], PARAMS["w"])


def test_sequences_and_traced_values_still_build():
    schedule = gradtx.piecewise_constant_schedule(1.0, {10: 0.1})
    assert float(schedule(20)) == pytest.approx(0.1)
    assert gradtx.join_schedules([schedule, schedule], [5]) is not None

    def step(learning_rate):
        tx = gradtx.adam(learning_rate)
        return tx.update(PARAMS, tx.init(PARAMS))[0]["w"]

    assert jax.jit(step)(1e-3).shape == (3,)


def test_every_hyperparameter_default_passes_the_checks():
    # Built with only the required arguments, every registered class must accept
    # its own defaults (the check may not refuse a default such as None).
    for name in registry.names():
        cls = registry.lookup(name)
        required = [
            field.name
            for field in dataclasses.fields(cls)
            if field.init
            and field.default is dataclasses.MISSING
            and field.default_factory is dataclasses.MISSING
        ]
        if not required:
            cls()


def test_integer_params_are_refused_naming_the_key_path():
    tx = gradtx.sgd(0.1)
    params = {"layer": {"w": jnp.ones(3), "steps": jnp.ones(3, jnp.int32)}}
    state = tx.init(params)
    with pytest.raises(TypeError, match=r"\['layer'\]\['steps'\].*int32"):
        tx.update(params, state, params)
    grads = {"layer": {"w": jnp.ones(3), "steps": jnp.ones(3)}}
    with pytest.raises(TypeError, match=r"parameter at \['layer'\]\['steps'\].*int32"):
        gradtx.adam(1e-3).update(grads, gradtx.adam(1e-3).init(params), params)


def test_integer_gradients_are_refused_under_jit_too():
    tx = gradtx.adam(1e-3)
    grads = {"w": jnp.ones(3, jnp.int32)}
    with pytest.raises(TypeError, match=r"gradient at \['w'\] has dtype int32"):
        jax.jit(tx.update)(grads, tx.init(grads))


def test_a_masked_out_integer_leaf_is_allowed_and_left_alone():
    params = {"w": jnp.ones(3), "steps": jnp.arange(3, dtype=jnp.int32)}
    tx = gradtx.masked(gradtx.adam(1e-1), {"w": True, "steps": False})
    grads = {"w": jnp.ones(3), "steps": jnp.zeros(3, jnp.int32)}
    updates, _ = tx.update(grads, tx.init(params), params)
    new = gradtx.apply_updates(params, updates)
    np.testing.assert_array_equal(new["steps"], params["steps"])
    assert new["steps"].dtype == jnp.int32
    assert np.all(new["w"] < 1.0)


def test_apply_updates_refuses_to_truncate_a_float_update():
    params = {"w": jnp.ones(2), "n": jnp.ones(2, jnp.int32)}
    with pytest.raises(TypeError, match=r"\['n'\] has dtype int32 but its update is float32"):
        gradtx.apply_updates(params, {"w": jnp.ones(2), "n": jnp.full(2, 0.1)})
    same = gradtx.apply_updates(params, {"w": jnp.ones(2), "n": jnp.ones(2, jnp.int32)})
    np.testing.assert_array_equal(same["n"], [2, 2])


def _numpy_adam(grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    mu = nu = np.zeros_like(grads[0], np.float64)
    updates = []
    for t, g in enumerate(grads, start=1):
        mu = b1 * mu + (1 - b1) * g
        nu = b2 * nu + (1 - b2) * g * g
        updates.append(-lr * (mu / (1 - b1**t)) / (np.sqrt(nu / (1 - b2**t)) + eps))
    return updates


def test_float16_adam_keeps_its_second_moment_in_float32():
    # (1 - b2) * g**2 = 1e-11 is below float16's smallest value (6e-8): stored in
    # float16, nu would be flushed to zero and each step ~70% too large.
    grads = [np.full(3, g, np.float64) for g in (1e-4, 2e-4, 1e-4, 3e-4, 1e-4)]
    tx = gradtx.adam(1e-3)
    params = jnp.ones(3, jnp.float16)
    state = tx.init(params)
    assert state[0].nu.dtype == jnp.float32
    assert state[0].mu.dtype == jnp.float16
    for g, expected in zip(grads, _numpy_adam(grads)):
        updates, state = tx.update(jnp.asarray(g, jnp.float16), state, params)
        assert updates.dtype == jnp.float16
        np.testing.assert_allclose(np.asarray(updates, np.float64), expected, rtol=2e-2)
    assert gradtx.scale_by_adam(nu_dtype="float16").init(params).nu.dtype == jnp.float16
    assert gradtx.adam(1e-3).init(jnp.ones(2, jnp.bfloat16))[0].nu.dtype == jnp.bfloat16


def test_adam_spreads_a_nan_gradient_into_its_moments_as_documented():
    tx = gradtx.adam(1e-3)
    params = jnp.ones(2)
    _, state = tx.update(jnp.array([1.0, jnp.nan]), tx.init(params), params)
    for _ in range(3):
        updates, state = tx.update(jnp.ones(2), state, params)
    assert np.isnan(state[0].mu[1]) and np.isnan(state[0].nu[1]) and np.isnan(updates[1])
    assert np.isfinite(updates[0])

    guarded = gradtx.apply_if_finite(tx, max_consecutive_errors=3)
    _, state = guarded.update(jnp.array([1.0, jnp.inf]), guarded.init(params), params)
    updates, state = guarded.update(jnp.ones(2), state, params)
    assert np.all(np.isfinite(updates)) and np.all(np.isfinite(state.inner_state[0].nu))


def test_every_optimizer_documents_non_finite_gradients():
    optimizers = [registry.lookup(name) for name in registry.names()]
    optimizers = [cls for cls in optimizers if issubclass(cls, Alias)]
    optimizers += [gradtx.muon, gradtx.schedule_free, gradtx.schedule_free_adamw]
    assert len(optimizers) > 30
    for cls in optimizers:
        assert "Non-finite gradients:" in cls.__doc__, cls.__name__
        assert "apply_if_finite" in cls.__doc__, cls.__name__


def test_an_adam_update_given_an_sgd_state_is_a_value_error():
    # The case: README promises a ValueError, it was an AttributeError.
    sgd_state = gradtx.sgd(0.1, momentum=0.9).init(PARAMS)
    with pytest.raises(ValueError, match=r"scale_by_adam was given a TraceState"):
        gradtx.adam(1e-3).update(PARAMS, sgd_state, PARAMS)


def test_a_huge_hyperparameter_gives_a_short_message_naming_it():
    # repr(10**5000) raises ValueError and a 1 MB string would flood the message:
    # values are quoted through checks.capped_repr.
    with pytest.raises((TypeError, ValueError)) as error:
        gradtx.sgd(10**5000)
    assert "learning_rate" in str(error.value) and len(str(error.value)) < 300
    with pytest.raises((TypeError, ValueError)) as error:
        gradtx.adam(1e-3, b1="x" * 10**6)
    assert "b1" in str(error.value) and len(str(error.value)) < 300
    with pytest.raises(gradtx.ConfigError) as error:
        gradtx.from_config({"name": "sgd", "learning_rate": 10**5000})
    assert error.value.path == "learning_rate" and len(str(error.value)) < 300
