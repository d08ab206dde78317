"""Training with Flax: linen's TrainState and nnx.Optimizer, weight-decay masks, checkpoints."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import gradtx

NO_DECAY = gradtx.path_mask(exclude=[r"bias$", r"scale$"])
# Optax maps callable() over a mask's pytree leaves, and a path_mask (a pytree with
# no leaves) then reads as a mask tree, so Optax gets it wrapped in a function.
OPTAX_NO_DECAY = lambda params: NO_DECAY(params)  # noqa: E731


def decay_kernels_only(params):
    """The usual Flax idiom as a plain callable: decay leaves named ``kernel``.

    Like optax.masked, gradtx calls a mask with the params at ``init`` (for
    nnx, a state of ``Param`` variables, whose leaves sit under ``.value``) and
    with the updates at ``update``, so the names are looked up along the path.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(getattr(key, "key", None) == "kernel" for key in path), params
    )


def data(seed=0):
    key_x, key_w = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(key_x, (64, 6))
    labels = jnp.argmax(x @ jax.random.normal(key_w, (6, 3)), axis=-1)
    return x, labels


# ---------------------------------------------------------------- linen


# No bias right before a norm layer: the norm cancels it, its gradient is rounding
# noise, and Adam, which divides by the gradient's scale, would amplify that noise
# into steps that differ between any two implementations.
class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.BatchNorm(use_running_average=not train)(nn.Dense(16, use_bias=False)(x))
        x = nn.LayerNorm()(nn.Dense(16)(nn.relu(x)))
        return nn.Dense(3)(nn.relu(x))


class TrainState(train_state.TrainState):
    batch_stats: dict


LINEN_NET = LinenNet()  # one module, so every TrainState has the same (static) apply_fn


def linen_state(tx):
    x, _ = data()
    variables = LINEN_NET.init(jax.random.PRNGKey(1), x, train=False)
    return TrainState.create(
        apply_fn=LINEN_NET.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=tx,
    )


@jax.jit
def linen_train_step(state, x, labels):
    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"])
    return state, loss


def paths(tree):
    return {
        "/".join(str(k.key) for k in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


@pytest.mark.parametrize(
    "mask",
    [NO_DECAY, decay_kernels_only],
    ids=["path_mask", "callable"],
)
def test_train_state_decays_kernels_but_not_biases_or_norm_scales(mask):
    state = linen_state(gradtx.adamw(learning_rate=0.1, weight_decay=0.5, mask=mask))
    before = paths(state.params)
    state = jax.jit(lambda s: s.apply_gradients(grads=jax.tree.map(jnp.zeros_like, s.params)))(
        state
    )
    after = paths(state.params)
    assert sorted(after) == [
        "BatchNorm_0/bias",
        "BatchNorm_0/scale",
        "Dense_0/kernel",
        "Dense_1/bias",
        "Dense_1/kernel",
        "Dense_2/bias",
        "Dense_2/kernel",
        "LayerNorm_0/bias",
        "LayerNorm_0/scale",
    ]
    for name, value in after.items():
        if name.endswith("kernel"):
            # A zero gradient gives a zero Adam step: only the decay moves it.
            np.testing.assert_allclose(value, before[name] * (1 - 0.1 * 0.5), rtol=1e-6)
        else:
            np.testing.assert_array_equal(value, before[name])


def test_train_state_training_matches_optax_adamw_with_the_same_mask():
    schedule = gradtx.exponential_decay(0.01, transition_steps=5, decay_rate=0.5)
    ours = linen_state(gradtx.adamw(schedule, weight_decay=0.1, mask=NO_DECAY))
    theirs = linen_state(
        optax.adamw(
            optax.exponential_decay(0.01, transition_steps=5, decay_rate=0.5),
            weight_decay=0.1,
            mask=OPTAX_NO_DECAY,
        )
    )
    x, labels = data()
    losses = []
    for _ in range(8):
        ours, loss = linen_train_step(ours, x, labels)
        theirs, _ = linen_train_step(theirs, x, labels)
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    for a, b in zip(jax.tree.leaves(ours.params), jax.tree.leaves(theirs.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        ours.batch_stats["BatchNorm_0"]["mean"],
        theirs.batch_stats["BatchNorm_0"]["mean"],
        rtol=1e-5,
        atol=1e-6,
    )


def test_train_state_resumes_from_a_checkpoint_bit_for_bit(tmp_path):
    tx = gradtx.adamw(
        gradtx.exponential_decay(0.01, transition_steps=3, decay_rate=0.5),
        weight_decay=0.1,
        mask=NO_DECAY,
    )
    x, labels = data()
    straight = linen_state(tx)
    for _ in range(6):
        straight, _ = linen_train_step(straight, x, labels)

    state = linen_state(tx)
    for _ in range(3):
        state, _ = linen_train_step(state, x, labels)
    gradtx.save_checkpoint(
        tmp_path / "linen.ckpt", state.params, state.opt_state, tx, step=int(state.step)
    )
    # batch_stats are model state, not optimizer state: saved alongside by the user.
    stats = state.batch_stats

    fresh = linen_state(tx)
    restored = gradtx.restore_checkpoint(tmp_path / "linen.ckpt", tx=tx, params_like=fresh.params)
    state = fresh.replace(
        params=restored.params,
        opt_state=restored.state,
        step=jnp.asarray(restored.step),
        batch_stats=stats,
    )
    compiled = linen_train_step._cache_size()
    for _ in range(3):
        state, _ = linen_train_step(state, x, labels)
    assert int(state.step) == 6
    assert linen_train_step._cache_size() == compiled  # the restored state fits the compiled step
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(straight.params)):
        assert np.array_equal(a, b)


# ---------------------------------------------------------------- nnx


class NnxNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.dense1 = nnx.Linear(6, 16, use_bias=False, rngs=rngs)  # see LinenNet
        self.norm1 = nnx.BatchNorm(16, rngs=rngs)
        self.dense2 = nnx.Linear(16, 16, rngs=rngs)
        self.norm2 = nnx.LayerNorm(16, rngs=rngs)
        self.head = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        x = self.norm2(self.dense2(nnx.relu(self.norm1(self.dense1(x)))))
        return self.head(nnx.relu(x))


def nnx_setup(tx):
    model = NnxNet(nnx.Rngs(0))
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


@nnx.jit
def nnx_train_step(model, optimizer, x, labels):
    def loss_fn(model):
        logits = model(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def nnx_params(model):
    return paths(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("mask", [NO_DECAY, decay_kernels_only], ids=["path_mask", "callable"])
def test_nnx_optimizer_decays_kernels_but_not_biases_or_norm_scales(mask):
    model, optimizer = nnx_setup(gradtx.adamw(learning_rate=0.1, weight_decay=0.5, mask=mask))
    before = nnx_params(model)
    nnx.jit(lambda m, o: o.update(m, jax.tree.map(jnp.zeros_like, nnx.state(m, nnx.Param))))(
        model, optimizer
    )
    after = nnx_params(model)
    assert sorted(after) == [
        "dense1/kernel",
        "dense2/bias",
        "dense2/kernel",
        "head/bias",
        "head/kernel",
        "norm1/bias",
        "norm1/scale",
        "norm2/bias",
        "norm2/scale",
    ]
    for name, value in after.items():
        if name.endswith("kernel"):
            np.testing.assert_allclose(value, before[name] * (1 - 0.1 * 0.5), rtol=1e-6)
        else:
            np.testing.assert_array_equal(value, before[name])


def test_nnx_optimizer_training_matches_optax_adamw_with_the_same_mask():
    ours_model, ours = nnx_setup(gradtx.adamw(0.01, weight_decay=0.1, mask=NO_DECAY))
    theirs_model, theirs = nnx_setup(optax.adamw(0.01, weight_decay=0.1, mask=OPTAX_NO_DECAY))
    x, labels = data()
    losses = [float(nnx_train_step(ours_model, ours, x, labels)) for _ in range(8)]
    for _ in range(8):
        nnx_train_step(theirs_model, theirs, x, labels)
    assert losses[-1] < losses[0]
    ours_params, theirs_params = nnx_params(ours_model), nnx_params(theirs_model)
    for name in ours_params:
        np.testing.assert_allclose(ours_params[name], theirs_params[name], rtol=1e-5, atol=1e-6)
    assert int(ours.step[...]) == 8


def test_nnx_optimizer_resumes_from_a_checkpoint_bit_for_bit(tmp_path):
    tx = gradtx.adamw(0.01, weight_decay=0.1, mask=NO_DECAY)
    x, labels = data()
    straight_model, straight = nnx_setup(tx)
    for _ in range(6):
        nnx_train_step(straight_model, straight, x, labels)

    model, optimizer = nnx_setup(tx)
    for _ in range(3):
        nnx_train_step(model, optimizer, x, labels)
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    gradtx.save_checkpoint(
        tmp_path / "nnx.ckpt",
        params,
        nnx.as_pure(optimizer.opt_state),
        tx,
        step=int(optimizer.step[...]),
    )
    batch_stats = nnx.state(model, nnx.BatchStat)  # model state, saved by the user

    fresh_model, fresh = nnx_setup(tx)
    restored = gradtx.restore_checkpoint(
        tmp_path / "nnx.ckpt", tx=tx, params_like=nnx.as_pure(nnx.state(fresh_model, nnx.Param))
    )
    nnx.update(fresh_model, restored.params, batch_stats)
    nnx.update(fresh.opt_state, nnx.state(restored.state))
    fresh.step[...] = restored.step
    for _ in range(3):
        nnx_train_step(fresh_model, fresh, x, labels)
    resumed, expected = nnx_params(fresh_model), nnx_params(straight_model)
    for name in expected:
        assert np.array_equal(resumed[name], expected[name]), name
    assert int(fresh.step[...]) == 6
