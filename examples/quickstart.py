"""gradtx quick start: one optimizer, a plain-JAX training loop and a Flax one.

Run: python examples/quickstart.py
"""

import jax
import jax.numpy as jnp

import gradtx


def plain_jax() -> float:
    """Fits a linear model with a jitted step that takes the optimizer as an argument."""
    key_x, key_w = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(key_x, (256, 8))
    y = x @ jax.random.normal(key_w, (8,))
    params = {"w": jnp.zeros(8), "b": jnp.zeros(())}

    def loss_fn(params):
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    @jax.jit
    def step(tx, params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state, loss

    tx = gradtx.adamw(
        learning_rate=gradtx.exponential_decay(
            init_value=0.05, transition_steps=100, decay_rate=0.5
        ),
        weight_decay=1e-4,
    )
    print(tx)  # prints like the call that built it
    state = tx.init(params)
    for _ in range(300):
        params, state, loss = step(tx, params, state)
    print(f"plain JAX: final loss {float(loss):.2e}")
    return float(loss)


def flax_train_state() -> float:
    """The same optimizer inside Flax's TrainState, with a small MLP."""
    import flax.linen as nn
    from flax.training import train_state

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.relu(nn.Dense(32)(x)))[:, 0]

    key_x, key_init = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.normal(key_x, (256, 4))
    y = jnp.sin(x[:, 0]) + x[:, 1] ** 2
    model = MLP()
    state = train_state.TrainState.create(
        apply_fn=model.apply,
        params=model.init(key_init, x)["params"],
        tx=gradtx.adam(learning_rate=3e-3),
    )

    @jax.jit
    def train_step(state):
        def loss_fn(params):
            return jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    for _ in range(300):
        state, loss = train_step(state)
    print(f"Flax TrainState: final loss {float(loss):.3f}")
    return float(loss)


if __name__ == "__main__":
    plain_jax()
    flax_train_state()
