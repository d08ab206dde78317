"""The built-in tasks: data, models and the CartPole dynamics."""

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.tasks import cartpole, digits, get_task, text


def _reference_cartpole_step(state, action):
    # Barto, Sutton & Anderson (1983) as written in Gym's CartPole, in NumPy.
    x, x_dot, theta, theta_dot = (float(v) for v in state)
    force = 10.0 if action == 1 else -10.0
    total_mass, pole_mass_length = 1.1, 0.05
    temp = (force + pole_mass_length * theta_dot**2 * np.sin(theta)) / total_mass
    theta_acc = (9.8 * np.sin(theta) - np.cos(theta) * temp) / (
        0.5 * (4.0 / 3.0 - 0.1 * np.cos(theta) ** 2 / total_mass)
    )
    x_acc = temp - pole_mass_length * theta_acc * np.cos(theta) / total_mass
    new = np.array(
        [
            x + 0.02 * x_dot,
            x_dot + 0.02 * x_acc,
            theta + 0.02 * theta_dot,
            theta_dot + 0.02 * theta_acc,
        ]
    )
    done = abs(new[0]) > 2.4 or abs(new[2]) > 12 * 2 * np.pi / 360
    return new, done


def test_cartpole_step_matches_reference_dynamics():
    rng = np.random.default_rng(0)
    for _ in range(50):
        state = rng.uniform(-0.2, 0.2, size=4)
        action = int(rng.integers(0, 2))
        expected, expected_done = _reference_cartpole_step(state, action)
        got, done = cartpole.step(jnp.asarray(state, jnp.float32), jnp.asarray(action))
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)
        assert bool(done) == expected_done


def test_a_balancing_controller_survives_and_pushing_one_way_fails():
    def survive(policy):
        state = jnp.zeros(4) + 0.01
        for step in range(1, cartpole.MAX_STEPS + 1):
            state, failed = cartpole.step(state, policy(state))
            if failed:
                return step
        return cartpole.MAX_STEPS

    # Push towards where the pole is falling (angle plus angular velocity).
    assert survive(lambda s: jnp.asarray(int(s[2] + 0.5 * s[3] > 0))) == cartpole.MAX_STEPS
    assert survive(lambda s: jnp.asarray(1)) < 30


def test_cartpole_rollout_masks_steps_after_failure():
    params = cartpole._init(jax.random.PRNGKey(0))
    _, alive, episode_return = cartpole.rollout(params, jax.random.PRNGKey(1))
    alive = np.asarray(alive)
    assert episode_return == alive.sum()
    # Once the episode fails, every later step is masked.
    first_dead = np.argmin(alive) if (alive == 0).any() else len(alive)
    assert (alive[:first_dead] == 1).all() and (alive[first_dead:] == 0).all()


def test_digits_splits_are_disjoint_and_complete():
    (train_x, _), (val_x, _), (test_x, _) = digits.load_digits_split()
    assert len(train_x) + len(val_x) + len(test_x) == 1797
    flat = lambda a: {row.tobytes() for row in a.reshape(len(a), -1)}  # noqa: E731
    # Some digits images are exact duplicates of each other, so compare counts
    # of unique rows rather than demanding empty intersections.
    assert len(flat(test_x) & flat(val_x)) < 5


def test_text_corpus_is_offline_python_source():
    ids = text.load_corpus()
    assert len(ids) > 20_000
    decoded = "".join(text.ALPHABET[i] if i < len(text.ALPHABET) else "?" for i in ids[:20000])
    assert "def " in decoded


def test_every_task_trains_and_evaluates_with_finite_numbers():
    for name in ("digits", "text", "cartpole"):
        task = get_task(name)
        params = task.init_params(jax.random.PRNGKey(0))
        batch = task.sample_batch(jax.random.PRNGKey(1))
        grads, curve_value = jax.jit(jax.grad(task.loss, has_aux=True))(
            params, batch, jax.random.PRNGKey(2)
        )
        assert np.isfinite(float(curve_value))
        assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
        assert task.score_name in jax.jit(task.evaluate)(params)
        assert np.isfinite(float(jax.jit(task.validation_loss)(params)))


def test_patch_convolution_equals_lax_convolution():
    from gradtx.tasks import nn

    key_p, key_x = jax.random.split(jax.random.PRNGKey(0))
    params = nn.conv_init(key_p, 3, 5)
    images = jax.random.normal(key_x, (2, 8, 8, 3))
    for stride in (1, 2):
        expected = (
            jax.lax.conv_general_dilated(
                images,
                params["kernel"],
                (stride, stride),
                "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
            + params["bias"][None, None, None, :]
        )
        np.testing.assert_allclose(nn.conv(params, images, stride), expected, atol=1e-5)
