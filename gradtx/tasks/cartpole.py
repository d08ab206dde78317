"""Reinforcement learning: REINFORCE on a CartPole written in JAX.

The dynamics are those of the classic control benchmark (Barto, Sutton &
Anderson, 1983), as in Gym's ``CartPole-v1``: Euler integration with a 0.02 s
step, failure when the pole leans more than 12 degrees or the cart leaves
[-2.4, 2.4]. Episodes are capped at ``MAX_STEPS`` and give +1 per step alive.
"""

import jax
import jax.numpy as jnp

from gradtx.tasks import nn
from gradtx.tasks.base import Task

GRAVITY = 9.8
CART_MASS = 1.0
POLE_MASS = 0.1
TOTAL_MASS = CART_MASS + POLE_MASS
POLE_HALF_LENGTH = 0.5
POLE_MASS_LENGTH = POLE_MASS * POLE_HALF_LENGTH
FORCE = 10.0
TIME_STEP = 0.02
ANGLE_LIMIT = 12 * 2 * jnp.pi / 360
POSITION_LIMIT = 2.4
MAX_STEPS = 200
EPISODES_PER_BATCH = 16
HIDDEN = 32


def reset(key: jax.Array) -> jax.Array:
    """A start state ``(x, x_dot, theta, theta_dot)`` uniform in [-0.05, 0.05]."""
    return jax.random.uniform(key, (4,), minval=-0.05, maxval=0.05)


def step(state: jax.Array, action: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One Euler step; ``action`` 1 pushes right, 0 left.

    Args:
      state: ``(x, x_dot, theta, theta_dot)``.
      action: 0 or 1.

    Returns:
      ``(next_state, failed)`` where ``failed`` says the episode ended.
    """
    x, x_dot, theta, theta_dot = state
    force = jnp.where(action == 1, FORCE, -FORCE)
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    temp = (force + POLE_MASS_LENGTH * theta_dot**2 * sin) / TOTAL_MASS
    theta_acc = (GRAVITY * sin - cos * temp) / (
        POLE_HALF_LENGTH * (4.0 / 3.0 - POLE_MASS * cos**2 / TOTAL_MASS)
    )
    x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS
    next_state = jnp.stack(
        [
            x + TIME_STEP * x_dot,
            x_dot + TIME_STEP * x_acc,
            theta + TIME_STEP * theta_dot,
            theta_dot + TIME_STEP * theta_acc,
        ]
    )
    failed = (jnp.abs(next_state[0]) > POSITION_LIMIT) | (jnp.abs(next_state[2]) > ANGLE_LIMIT)
    return next_state, failed


def _init(key: jax.Array) -> dict:
    k1, k2 = jax.random.split(key)
    return {"hidden": nn.dense_init(k1, 4, HIDDEN), "policy": nn.dense_init(k2, HIDDEN, 2)}


def _action_logits(params: dict, state: jax.Array) -> jax.Array:
    return nn.dense(params["policy"], jnp.tanh(nn.dense(params["hidden"], state)))


def rollout(params: dict, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One episode with actions sampled from the policy.

    Args:
      params: policy parameters.
      key: PRNG key.

    Returns:
      ``(log_probs, alive, episode_return)``: per-step log-probabilities of
      the chosen actions, a 0/1 mask of steps taken before failure, and the
      number of steps survived.
    """
    reset_key, action_key = jax.random.split(key)

    def body(carry: tuple, step_key: jax.Array) -> tuple[tuple, tuple]:
        state, alive = carry
        logits = _action_logits(params, state)
        action = jax.random.categorical(step_key, logits)
        log_prob = jax.nn.log_softmax(logits)[action]
        next_state, failed = step(state, action)
        return (next_state, alive * (1.0 - failed)), (log_prob, alive)

    keys = jax.random.split(action_key, MAX_STEPS)
    _, (log_probs, alive) = jax.lax.scan(body, (reset(reset_key), jnp.ones(())), keys)
    return log_probs, alive, alive.sum()


def _reinforce_loss(params: dict, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    keys = jax.random.split(key, EPISODES_PER_BATCH)
    log_probs, alive, returns = jax.vmap(rollout, in_axes=(None, 0))(params, keys)
    # Reward-to-go of each step, minus the batch mean as a baseline.
    to_go = jnp.flip(jnp.cumsum(jnp.flip(alive, -1), -1), -1)
    advantage = jax.lax.stop_gradient(to_go - to_go.mean(axis=0, keepdims=True))
    loss = -jnp.sum(log_probs * advantage * alive) / (EPISODES_PER_BATCH * MAX_STEPS)
    return loss, returns.mean()


def make_task() -> Task:
    """The ``cartpole`` task: score = average return of the trained policy."""
    eval_keys = jax.random.split(jax.random.PRNGKey(12345), 32)

    def evaluate(params: dict) -> dict[str, jax.Array]:
        returns = jax.vmap(lambda k: rollout(params, k)[2])(eval_keys)
        return {"average_return": returns.mean()}

    return Task(
        name="cartpole",
        description=f"REINFORCE policy gradient on a JAX CartPole (returns capped at {MAX_STEPS})",
        init_params=_init,
        sample_batch=lambda key: key,
        loss=lambda params, batch_key, key: _reinforce_loss(params, batch_key),
        evaluate=evaluate,
        score_name="average_return",
        higher_is_better=True,
        curve_name="episode return",
        curve_target=150.0,
        curve_higher_is_better=True,
        steps=200,
        eval_every=20,
        train_score_name=None,
        validation_loss=lambda params: -evaluate(params)["average_return"],
    )
