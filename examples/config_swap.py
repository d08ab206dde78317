"""Swap optimizers via config: one model, one training loop, the optimizer from a file.

Each file in examples/configs/ describes an optimizer (sgd with momentum, adam,
adamw with a decaying learning rate and no weight decay on biases and scales,
sgd with momentum and weight decay). Pick one with --config, change any field
from the command line with path=value overrides:

    python examples/config_swap.py --config adamw_schedule
    python examples/config_swap.py --config adam learning_rate=1e-2 b2=0.95
    python examples/config_swap.py --config adamw_schedule learning_rate.decay_rate=0.9
    python examples/config_swap.py --config all --steps 20      # every config, briefly
    python examples/config_swap.py --config my_optimizer.yaml   # any config file
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp

import gradtx

CONFIGS = pathlib.Path(__file__).parent / "configs"


def init_params(key: jax.Array, sizes: tuple[int, ...] = (8, 32, 1)) -> dict:
    """A two-layer MLP with a layer norm: kernels, biases and a scale."""
    key_0, key_1 = jax.random.split(key)
    return {
        "dense_0": {
            "kernel": jax.random.normal(key_0, sizes[:2]) / jnp.sqrt(sizes[0]),
            "bias": jnp.zeros(sizes[1]),
        },
        "norm": {"scale": jnp.ones(sizes[1]), "bias": jnp.zeros(sizes[1])},
        "dense_1": {
            "kernel": jax.random.normal(key_1, sizes[1:]) / jnp.sqrt(sizes[1]),
            "bias": jnp.zeros(sizes[2]),
        },
    }


def predict(params: dict, x: jax.Array) -> jax.Array:
    hidden = x @ params["dense_0"]["kernel"] + params["dense_0"]["bias"]
    mean = hidden.mean(axis=-1, keepdims=True)
    centered = hidden - mean
    normalized = centered / jnp.sqrt((centered**2).mean(axis=-1, keepdims=True) + 1e-6)
    hidden = jax.nn.gelu(normalized * params["norm"]["scale"] + params["norm"]["bias"])
    return (hidden @ params["dense_1"]["kernel"] + params["dense_1"]["bias"])[:, 0]


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((predict(params, x) - y) ** 2)


@jax.jit
def train_step(tx, params, state, x, y):
    """One step; the optimizer is an ordinary argument (a pytree of its hyperparameters)."""
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return gradtx.apply_updates(params, updates), state, loss


def train(tx: gradtx.Transformation, steps: int) -> tuple[float, float]:
    """Fits the MLP to a fixed regression task; returns the first and last loss."""
    key_x, key_params = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(key_x, (512, 8))
    y = jnp.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2]
    params = init_params(key_params)
    state = tx.init(params)
    first = float(loss_fn(params, x, y))
    for _ in range(steps):
        params, state, loss = train_step(tx, params, state, x, y)
    last = float(loss_fn(params, x, y))
    # The current hyperparameters, read from the state: no wrapper needed.
    current = gradtx.hyperparams(tx, state)
    print(f"  learning rate now {float(current['learning_rate']):.3g}")
    return first, last


def config_path(name: str) -> pathlib.Path:
    path = pathlib.Path(name)
    return path if path.suffix else CONFIGS / f"{name}.yaml"


def main() -> None:
    names = sorted(path.stem for path in CONFIGS.glob("*.yaml"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default="adamw_schedule",
        help=f"one of {', '.join(names)}, 'all', or a path to a .yaml/.yml/.json file",
    )
    parser.add_argument("--steps", type=int, default=300, help="training steps per config")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="path=value",
        help="fields to change, e.g. learning_rate=1e-2 or learning_rate.decay_rate=0.9",
    )
    args = parser.parse_args()
    chosen = names if args.config == "all" else [args.config]
    for name in chosen:
        try:
            tx = gradtx.load_config(config_path(name), overrides=args.overrides)
        except (gradtx.ConfigError, OSError, ValueError) as error:
            parser.error(str(error))
        print(f"{name}: {tx}")
        first, last = train(tx, args.steps)
        print(f"{name}: loss {first:.4f} -> {last:.4f} in {args.steps} steps")


if __name__ == "__main__":
    main()
