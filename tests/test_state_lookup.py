"""tree_get and hyperparams: reading optimizer state by name, without wrapping the optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

PARAMS = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
SCHEDULE = gradtx.exponential_decay(init_value=0.1, transition_steps=2, decay_rate=0.5)


def run(tx, steps):
    """The state after ``steps`` jitted updates with constant gradients."""

    @jax.jit
    def step(tx, state):
        return tx.update(PARAMS, state, PARAMS)[1]

    state = tx.init(PARAMS)
    for _ in range(steps):
        state = step(tx, state)
    return state


# ---------------------------------------------------------------- tree_get


def test_tree_get_finds_an_entry_by_name():
    state = run(gradtx.adam(1e-3), 3)
    assert gradtx.tree_get(state, "mu") is state[0].mu
    assert int(gradtx.tree_get(state, "ScaleByAdamState.count")) == 3


def test_tree_get_takes_dotted_paths_indices_and_class_names():
    schedule = gradtx.linear_schedule(0.1, 0.0, 10)
    state = run(gradtx.sgd(schedule, momentum=0.9), 2)
    assert gradtx.tree_get(state, "1.count") is state[1].count
    assert gradtx.tree_get(state, "[1].count") is state[1].count
    assert gradtx.tree_get(state, "trace.w") is state[0].trace["w"]
    assert gradtx.tree_get(state, "TraceState") is state[0]


def test_tree_get_count_is_unambiguous_where_optax_s_is():
    # Optax's layout: a constant learning rate or weight decay keeps no count.
    state = run(gradtx.adamw(1e-3), 1)
    assert gradtx.tree_get(state, "count") is state[0].count


def test_tree_get_refuses_an_ambiguous_name_and_lists_the_paths():
    state = run(gradtx.adamw(gradtx.linear_schedule(1e-3, 0.0, 10)), 1)
    with pytest.raises(ValueError) as info:
        gradtx.tree_get(state, "count")
    assert str(info.value) == (
        "'count' is ambiguous: it matches 0.count (ScaleByAdamState.count), "
        "2.count (ScaleByScheduleState.count); pass one of these paths"
    )


def test_tree_get_without_a_match_lists_the_names_or_returns_the_default():
    state = run(gradtx.adam(1e-3), 1)
    expected = r"nothing named 'trace' in the tree; its names are: .*count, mu"
    with pytest.raises(KeyError, match=expected):
        gradtx.tree_get(state, "trace")
    assert gradtx.tree_get(state, "trace", default=None) is None
    with pytest.raises(ValueError, match="dotted path"):
        gradtx.tree_get(state, "mu..w")


def test_tree_get_works_on_optax_state_too():
    state = optax.adam(1e-3).init(PARAMS)
    assert int(gradtx.tree_get(state, "ScaleByAdamState.count")) == 0


# ---------------------------------------------------------------- hyperparams


def test_a_scheduled_learning_rate_is_read_at_the_current_step():
    tx = gradtx.adamw(SCHEDULE, weight_decay=1e-4, mask=gradtx.path_mask(exclude=["b$"]))
    for steps in [0, 1, 5]:
        values = gradtx.hyperparams(tx, run(tx, steps))
        np.testing.assert_allclose(values["learning_rate"], SCHEDULE(steps), rtol=1e-6)
    assert set(values) == {"learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay"}
    assert float(values["b2"]) == pytest.approx(0.999)
    assert float(values["weight_decay"]) == pytest.approx(1e-4)


def test_the_learning_rate_read_is_the_one_the_next_update_uses():
    tx = gradtx.sgd(SCHEDULE)
    state = run(tx, 3)
    learning_rate = gradtx.hyperparams(tx, state)["learning_rate"]
    updates, _ = tx.update(PARAMS, state)
    np.testing.assert_allclose(updates["w"], -learning_rate * PARAMS["w"], rtol=1e-6)


def test_chain_members_are_keyed_by_their_config_path():
    tx = gradtx.chain(
        gradtx.scale_by_adam(b1=0.8),
        gradtx.add_decayed_weights(gradtx.linear_schedule(0.0, 1.0, transition_steps=10)),
        gradtx.scale_by_learning_rate(SCHEDULE),
    )
    values = gradtx.hyperparams(tx, run(tx, 4))
    assert set(values) == {
        "transforms.0.b1",
        "transforms.0.b2",
        "transforms.0.eps",
        "transforms.0.eps_root",
        "transforms.1.weight_decay",
        "transforms.2.learning_rate",
    }
    np.testing.assert_allclose(values["transforms.1.weight_decay"], 0.4, rtol=1e-6)
    np.testing.assert_allclose(values["transforms.2.learning_rate"], SCHEDULE(4), rtol=1e-6)
    # Every key is a path from_config's overrides accept.
    config = gradtx.to_config(tx)
    for key in values:
        gradtx.from_config(config, [f"{key}=0.5"])


def test_an_alias_inside_a_chain_reads_its_own_step():
    tx = gradtx.chain(gradtx.identity(), gradtx.adam(SCHEDULE))
    values = gradtx.hyperparams(tx, run(tx, 3))
    np.testing.assert_allclose(values["transforms.1.learning_rate"], SCHEDULE(3), rtol=1e-6)


def test_absent_optional_hyperparameters_and_structural_options_are_left_out():
    values = gradtx.hyperparams(gradtx.sgd(0.1, nesterov=True), run(gradtx.sgd(0.1), 1))
    assert set(values) == {"learning_rate"}


def test_a_python_callable_schedule_is_evaluated_too():
    tx = gradtx.scale_by_learning_rate(lambda count: 1.0 / (count + 1))
    assert float(gradtx.hyperparams(tx, run(tx, 3))["learning_rate"]) == pytest.approx(0.25)


def test_hyperparams_works_inside_jit():
    tx = gradtx.adamw(SCHEDULE)
    state = run(tx, 2)
    values = jax.jit(gradtx.hyperparams)(tx, state)
    np.testing.assert_allclose(values["learning_rate"], SCHEDULE(2), rtol=1e-6)


def test_a_foreign_member_contributes_nothing():
    tx = gradtx.chain(optax.scale_by_adam(), gradtx.scale_by_learning_rate(0.1))
    assert set(gradtx.hyperparams(tx, run(tx, 1))) == {"transforms.1.learning_rate"}


def test_a_state_that_does_not_fit_is_refused():
    tx = gradtx.chain(gradtx.trace(0.9), gradtx.scale(1.0))
    with pytest.raises(ValueError, match="does not belong to this chain of 2"):
        gradtx.hyperparams(tx, (gradtx.EmptyState(),))


def test_a_schedule_without_a_count_in_the_state_is_an_error():
    @gradtx.base.value_class
    class scheduled_scale(gradtx.Transformation):  # noqa: N801
        step_size: object = gradtx.base.hyperparameter()

        def init(self, params):
            return gradtx.EmptyState()

    expected = "step_size is a schedule, but the state of scheduled_scale"
    with pytest.raises(ValueError, match=expected):
        gradtx.hyperparams(scheduled_scale(SCHEDULE), gradtx.EmptyState())
