"""gradtx.Optimizer: the stateful, torch.optim-style object."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx


def make_params():
    return {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3) / 6, "bias": jnp.ones(3)}}


def gradients_at(step):
    key = jax.random.fold_in(jax.random.PRNGKey(0), step)
    k1, k2 = jax.random.split(key)
    return {"dense": {"kernel": jax.random.normal(k1, (2, 3)), "bias": jax.random.normal(k2, (3,))}}


def hand_written_run(tx, params, steps, first_step=0):
    @jax.jit
    def step(tx, params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    state = tx.init(params)
    for i in range(first_step, first_step + steps):
        params, state = step(tx, params, state, gradients_at(i))
    return params, state


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


SCHEDULED_ADAMW = gradtx.adamw(
    learning_rate=gradtx.exponential_decay(0.1, transition_steps=2, decay_rate=0.5),
    weight_decay=0.01,
)


def test_step_matches_a_hand_written_jitted_step_bit_for_bit():
    opt = gradtx.Optimizer(SCHEDULED_ADAMW, make_params())
    for i in range(5):
        returned = opt.step(gradients_at(i))
        assert returned is opt.params
    expected_params, expected_state = hand_written_run(SCHEDULED_ADAMW, make_params(), 5)
    assert_trees_equal(opt.params, expected_params)
    assert_trees_equal(opt.state, expected_state)
    assert opt.step_count == 5


def test_step_donates_params_and_state_but_not_the_callers_arrays():
    params = make_params()
    opt = gradtx.Optimizer(gradtx.adam(0.1), params)
    before = opt.params
    state_before = opt.state
    opt.step(gradients_at(0))
    assert before["dense"]["kernel"].is_deleted()
    assert jax.tree.leaves(state_before)[-1].is_deleted()
    # The constructor copied: the caller's arrays are still alive.
    assert not params["dense"]["kernel"].is_deleted()
    grads = gradients_at(1)
    opt.step(grads)
    assert not grads["dense"]["kernel"].is_deleted()


def test_compiles_once_across_steps_and_learning_rate_changes():
    opt = gradtx.Optimizer(gradtx.adamw(1e-2, weight_decay=1e-3), make_params())
    for i, learning_rate in enumerate([1e-2, 5e-3, np.float32(1e-3), jnp.asarray(2e-3), 1, 0.0]):
        opt.set_hyperparams(learning_rate=learning_rate)
        opt.step(gradients_at(i))
    opt.set_hyperparams(weight_decay=0.5, b2=0.99)
    opt.step(gradients_at(10))
    assert opt.compile_count == 1
    assert opt._update._cache_size() == 1
    assert opt.step_count == 7


def test_changing_numbers_inside_a_schedule_does_not_recompile():
    opt = gradtx.Optimizer(SCHEDULED_ADAMW, make_params())
    opt.step(gradients_at(0))
    opt.set_hyperparams(
        learning_rate=gradtx.exponential_decay(0.05, transition_steps=3, decay_rate=0.9)
    )
    opt.step(gradients_at(1))
    assert opt.compile_count == 1


def test_replacing_a_number_by_a_schedule_compiles_once_more_and_keeps_the_state():
    opt = gradtx.Optimizer(gradtx.adam(0.1), make_params())
    opt.step(gradients_at(0))
    schedule = gradtx.linear_schedule(0.1, 0.0, transition_steps=10)
    opt.set_hyperparams(learning_rate=schedule)
    opt.step(gradients_at(1))
    assert opt.compile_count == 2
    assert opt.learning_rate == pytest.approx(float(schedule(2)))


def test_a_changed_learning_rate_is_used_by_the_next_step():
    opt = gradtx.Optimizer(gradtx.sgd(0.1), {"w": jnp.zeros(2)})
    opt.step({"w": jnp.ones(2)})
    opt.set_hyperparams(learning_rate=0.5)
    params = opt.step({"w": jnp.ones(2)})
    np.testing.assert_allclose(params["w"], [-0.6, -0.6], rtol=1e-6)
    assert opt.tx == gradtx.sgd(0.5)


def test_learning_rate_is_the_value_the_next_step_uses():
    opt = gradtx.Optimizer(SCHEDULED_ADAMW, make_params())
    assert opt.learning_rate == pytest.approx(0.1)
    opt.step(gradients_at(0))
    opt.step(gradients_at(1))
    assert opt.learning_rate == pytest.approx(0.05)
    assert isinstance(opt.learning_rate, float)
    assert gradtx.Optimizer(gradtx.sgd(0.3), make_params()).learning_rate == pytest.approx(0.3)


def test_learning_rate_of_a_chain_member():
    tx = gradtx.chain(gradtx.trace(0.9), gradtx.scale_by_learning_rate(0.2))
    opt = gradtx.Optimizer(tx, make_params())
    assert opt.learning_rate == pytest.approx(0.2)
    opt.set_hyperparams(learning_rate=0.4, decay=0.5)
    assert opt.tx == gradtx.chain(gradtx.trace(0.5), gradtx.scale_by_learning_rate(0.4))
    nested = gradtx.chain(gradtx.chain(gradtx.scale_by_adam()), tx)
    opt = gradtx.Optimizer(nested, make_params())
    opt.set_hyperparams(b2=0.9)
    assert opt.tx.transforms[0].transforms[0].b2 == 0.9
    assert opt.tx.transforms[1] == tx


def test_learning_rate_is_missing_when_the_optimizer_has_none():
    opt = gradtx.Optimizer(gradtx.chain(gradtx.scale(-0.1)), make_params())
    with pytest.raises(AttributeError, match="has no hyperparameter 'learning_rate'"):
        _ = opt.learning_rate


def test_set_hyperparams_rejects_an_unknown_name_listing_the_fields():
    opt = gradtx.Optimizer(gradtx.adam(0.1), make_params())
    with pytest.raises(
        ValueError, match=r"has no hyperparameter 'lr'; its fields are: learning_rate, b1, b2"
    ):
        opt.set_hyperparams(lr=0.1)
    tx = gradtx.chain(gradtx.trace(0.9), gradtx.scale_by_learning_rate(0.2))
    opt = gradtx.Optimizer(tx, make_params())
    with pytest.raises(
        ValueError,
        match=r"member 0 \(trace\): decay, nesterov, accumulator_dtype; "
        r"member 1 \(scale_by_learning_rate\): learning_rate, flip_sign",
    ):
        opt.set_hyperparams(momentum=0.9)


def test_set_hyperparams_rejects_a_name_shared_by_several_chain_members():
    tx = gradtx.chain(gradtx.trace(0.9), gradtx.trace(0.5), gradtx.scale_by_learning_rate(0.1))
    opt = gradtx.Optimizer(tx, make_params())
    with pytest.raises(
        ValueError,
        match=r"'decay' is a field of several members .* \(positions 0 \(trace\), 1 \(trace\)\)",
    ):
        opt.set_hyperparams(decay=0.1)
    # The suggested way out: build the chain and assign it.
    opt.tx = gradtx.chain(gradtx.trace(0.1), gradtx.trace(0.5), gradtx.scale_by_learning_rate(0.1))
    opt.step(gradients_at(0))
    assert opt.compile_count == 1


def test_set_hyperparams_validates_values_and_keeps_the_old_optimizer_on_error():
    opt = gradtx.Optimizer(gradtx.adam(0.1), make_params())
    with pytest.raises(ValueError, match=r"b2 must be in \[0, 1\), got 1.5"):
        opt.set_hyperparams(learning_rate=0.2, b2=1.5)
    assert opt.tx == gradtx.adam(0.1)


def test_a_new_tx_that_needs_another_state_is_rejected():
    opt = gradtx.Optimizer(gradtx.sgd(0.1, momentum=0.9), make_params())
    with pytest.raises(
        ValueError, match=r"needs another optimizer state .* create a new Optimizer"
    ):
        opt.set_hyperparams(weight_decay=0.1)  # sgd adds a weight-decay step with its own state
    with pytest.raises(ValueError, match="needs another optimizer state"):
        opt.tx = gradtx.adam(0.1)
    assert opt.tx == gradtx.sgd(0.1, momentum=0.9)


def test_accumulate_then_step_applies_the_mean():
    accumulated = gradtx.Optimizer(gradtx.adam(0.1), make_params())
    direct = gradtx.Optimizer(gradtx.adam(0.1), make_params())
    micro = [gradients_at(i) for i in range(3)]
    for grads in micro:
        accumulated.accumulate(grads)
    assert accumulated.num_accumulated == 3
    accumulated.step()
    mean = jax.tree.map(lambda *g: (g[0] + g[1] + g[2]) / 3, *micro)
    direct.step(mean)
    for x, y in zip(jax.tree.leaves(accumulated.params), jax.tree.leaves(direct.params)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    assert accumulated.compile_count == 1


def test_accumulate_with_sum_reduction():
    opt = gradtx.Optimizer(gradtx.sgd(1.0), {"w": jnp.zeros(2)}, reduction="sum")
    opt.accumulate({"w": jnp.ones(2)})
    opt.accumulate({"w": jnp.full(2, 2.0)})
    np.testing.assert_array_equal(opt.step()["w"], [-3.0, -3.0])


def test_step_keeps_the_buffer_until_zero_grad_like_torch():
    opt = gradtx.Optimizer(gradtx.sgd(1.0), {"w": jnp.zeros(2)})
    opt.accumulate({"w": jnp.ones(2)})
    opt.step()
    np.testing.assert_array_equal(opt.step()["w"], [-2.0, -2.0])
    opt.zero_grad()
    assert opt.num_accumulated == 0
    opt.accumulate({"w": jnp.full(2, 3.0)})
    np.testing.assert_array_equal(opt.step()["w"], [-5.0, -5.0])


def test_step_without_gradients_or_accumulation_raises():
    opt = gradtx.Optimizer(gradtx.sgd(1.0), {"w": jnp.zeros(2)})
    with pytest.raises(
        RuntimeError, match=r"no gradients to apply: call accumulate\(gradients\) first"
    ):
        opt.step()
    opt.accumulate({"w": jnp.ones(2)})
    opt.zero_grad()
    with pytest.raises(RuntimeError, match="no gradients to apply"):
        opt.step()
    assert opt.step_count == 0


def test_step_with_gradients_while_accumulated_ones_wait_raises():
    opt = gradtx.Optimizer(gradtx.sgd(1.0), {"w": jnp.zeros(2)})
    opt.accumulate({"w": jnp.ones(2)})
    with pytest.raises(RuntimeError, match=r"while 1 accumulated gradients are waiting"):
        opt.step({"w": jnp.ones(2)})


def test_mismatched_gradients_name_the_key_path():
    opt = gradtx.Optimizer(gradtx.adam(0.1), make_params())
    wrong = {"dense": {"kernel": jnp.zeros((2, 3))}}
    with pytest.raises(ValueError, match=r"\['dense'\]\['bias'\] is missing from the gradients"):
        opt.accumulate(wrong)
    with pytest.raises(ValueError, match=r"\['dense'\]\['bias'\] is missing from the gradients"):
        opt.step(wrong)
    opt.accumulate(gradients_at(0))
    with pytest.raises(
        ValueError, match=r"\['dense'\]\['bias'\] has shape \(4,\) in the gradients"
    ):
        opt.accumulate({"dense": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(4)}})


def test_constructor_errors():
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum', got 'max'"):
        gradtx.Optimizer(gradtx.sgd(0.1), make_params(), reduction="max")
    with pytest.raises(TypeError, match="tx must be a gradient transformation"):
        gradtx.Optimizer(0.1, make_params())


def test_an_optax_transformation_is_accepted():
    opt = gradtx.Optimizer(optax.sgd(0.5), {"w": jnp.zeros(2)})
    np.testing.assert_array_equal(opt.step({"w": jnp.ones(2)})["w"], [-0.5, -0.5])
    with pytest.raises(ValueError, match="has no hyperparameter 'learning_rate'"):
        opt.set_hyperparams(learning_rate=0.1)


def test_state_dict_round_trip_resumes_bit_for_bit():
    straight = gradtx.Optimizer(SCHEDULED_ADAMW, make_params())
    for i in range(6):
        straight.step(gradients_at(i))

    first = gradtx.Optimizer(SCHEDULED_ADAMW, make_params())
    for i in range(3):
        first.step(gradients_at(i))
    saved = first.state_dict()
    first.step(gradients_at(99))  # donates the buffers; the state dict holds copies
    assert isinstance(jax.tree.leaves(saved["params"])[0], np.ndarray)
    assert saved["step"] == 3 and saved["config"] == gradtx.to_config(SCHEDULED_ADAMW)

    resumed = gradtx.Optimizer(SCHEDULED_ADAMW, make_params())
    resumed.load_state_dict(saved)
    assert resumed.step_count == 3
    assert resumed.learning_rate == pytest.approx(float(SCHEDULED_ADAMW.learning_rate(3)))
    for i in range(3, 6):
        resumed.step(gradients_at(i))
    assert_trees_equal(resumed.params, straight.params)
    assert_trees_equal(resumed.state, straight.state)
    # The loaded arrays are copies: stepping did not invalidate the state dict.
    assert np.isfinite(jax.tree.leaves(saved["params"])[0]).all()


def test_load_state_dict_rejects_another_optimizer_naming_the_field():
    saved = gradtx.Optimizer(gradtx.adam(0.1), make_params()).state_dict()
    opt = gradtx.Optimizer(gradtx.adam(0.1, b2=0.99), make_params())
    with pytest.raises(
        gradtx.CheckpointError,
        match=r"config\['b2'\] is 0.999 in the state dict but 0.99 for the given tx",
    ):
        opt.load_state_dict(saved)
    opt = gradtx.Optimizer(gradtx.adamw(0.1), make_params())
    with pytest.raises(gradtx.CheckpointError, match=r"config\['name'\] is 'adam' .* but 'adamw'"):
        opt.load_state_dict(saved)


def test_load_state_dict_rejects_another_model_naming_the_key_path():
    saved = gradtx.Optimizer(gradtx.adam(0.1), make_params()).state_dict()
    renamed = {"dense": {"kernel": jnp.zeros((2, 3)), "scale": jnp.ones(3)}}
    with pytest.raises(
        gradtx.CheckpointError,
        match=r"params\['dense'\]\['scale'\] is in the optimizer's params but missing from "
        "the state dict",
    ):
        gradtx.Optimizer(gradtx.adam(0.1), renamed).load_state_dict(saved)
    smaller = {"dense": {"kernel": jnp.zeros((2, 3))}}
    with pytest.raises(
        gradtx.CheckpointError,
        match=r"params\['dense'\]\['bias'\] is in the state dict but not in the optimizer's params",
    ):
        gradtx.Optimizer(gradtx.adam(0.1), smaller).load_state_dict(saved)


def test_load_state_dict_rejects_shapes_dtypes_steps_and_missing_keys():
    opt = gradtx.Optimizer(gradtx.adam(0.1), make_params())
    saved = opt.state_dict()
    wide = {"dense": {"kernel": np.zeros((2, 4), np.float32), "bias": np.ones(3, np.float32)}}
    with pytest.raises(
        gradtx.CheckpointError,
        match=r"params\['dense'\]\['kernel'\] has shape \(2, 4\) in the state dict but \(2, 3\)",
    ):
        opt.load_state_dict({**saved, "params": wide})
    half = jax.tree.map(lambda x: x.astype(jnp.bfloat16), saved["params"])
    with pytest.raises(
        gradtx.CheckpointError, match=r"has dtype bfloat16 in the state dict but float32"
    ):
        opt.load_state_dict({**saved, "params": half})
    with pytest.raises(gradtx.CheckpointError, match="step must be a non-negative integer, got -1"):
        opt.load_state_dict({**saved, "step": -1})
    with pytest.raises(gradtx.CheckpointError, match="the state dict lacks 'config'"):
        opt.load_state_dict({key: value for key, value in saved.items() if key != "config"})
    assert opt.step_count == 0


def test_load_state_dict_accepts_a_restored_checkpoint(tmp_path):
    opt = gradtx.Optimizer(gradtx.adam(0.1), make_params())
    opt.step(gradients_at(0))
    gradtx.save_checkpoint(tmp_path / "ckpt", opt.params, opt.state, opt.tx, step=opt.step_count)
    resumed = gradtx.Optimizer(gradtx.adam(0.1), make_params())
    resumed.load_state_dict(
        gradtx.restore_checkpoint(tmp_path / "ckpt", tx=resumed.tx, params_like=resumed.params)
    )
    assert resumed.step_count == 1
    assert_trees_equal(resumed.params, opt.params)


def test_repr_and_replace_semantics():
    opt = gradtx.Optimizer(gradtx.sgd(0.1), make_params())
    assert repr(opt) == "Optimizer(sgd(learning_rate=0.1), step_count=0)"
    opt.set_hyperparams(learning_rate=0.2)
    assert opt.tx == dataclasses.replace(gradtx.sgd(0.1), learning_rate=0.2)


def test_learning_rate_follows_the_state_not_the_recorded_step():
    opt = gradtx.Optimizer(SCHEDULED_ADAMW, make_params())
    for i in range(4):
        opt.step(gradients_at(i))
    saved = {**opt.state_dict(), "step": 1}  # e.g. an epoch number, not the update count
    resumed = gradtx.Optimizer(SCHEDULED_ADAMW, make_params())
    resumed.load_state_dict(saved)
    assert resumed.step_count == 1
    assert resumed.learning_rate == pytest.approx(float(SCHEDULED_ADAMW.learning_rate(4)))
