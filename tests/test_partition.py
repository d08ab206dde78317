"""partition, multi_transform, path_labels, explain_labels: parity with Optax, errors, config."""

import jax
import jax.numpy as jnp
import optax
import pytest
from masking_parity import (
    assert_same_layout,
    assert_trees_close,
    assert_trees_equal,
    gradients,
    nested_params,
    restore_into,
    run,
)

import gradtx
from gradtx.config import ConfigError

TREE_LABELS = {
    "dense": {"kernel": "adam", "bias": "sgd"},
    "layers": [{"w": "sgd"}, {"w": "adam", "scale": "decay"}],
    "frozen": None,
}
RULES = gradtx.path_labels(
    [(r"bias$", "sgd"), (r"scale$", "decay"), (r"^layers/0/", "sgd"), (r".", "adam")]
)
LABELS = {
    "tree": TREE_LABELS,
    "callable": lambda p: jax.tree.map(lambda x: "adam" if x.ndim == 2 else "sgd", p),
    "path_labels": RULES,
    "prefix": {"dense": "adam", "layers": "sgd", "frozen": "decay"},
}
GRADTX = {
    "adam": gradtx.adam(0.05, b2=0.99),
    "sgd": gradtx.sgd(0.1, momentum=0.9),
    "decay": gradtx.chain(gradtx.add_decayed_weights(0.1), gradtx.scale(-0.05)),
    "unused": gradtx.trace(0.5),
}
OPTAX = {
    "adam": optax.adam(0.05, b2=0.99),
    "sgd": optax.sgd(0.1, momentum=0.9),
    "decay": optax.chain(optax.add_decayed_weights(0.1), optax.scale(-0.05)),
    "unused": optax.trace(0.5),
}


def reference_for(labels, dtype, constructor=optax.partition):
    # In bfloat16 gradtx's numerics are deliberately more precise than Optax's
    # (float32 coefficients), so only the partitioning is compared, bit for bit.
    return constructor(OPTAX if dtype == jnp.float32 else GRADTX, labels)


@pytest.mark.parametrize(
    ("kind", "dtype"),
    [(kind, jnp.float32) for kind in LABELS]
    + [("tree", jnp.bfloat16), ("path_labels", jnp.bfloat16)],
)
def test_jitted_trajectory_matches_optax(kind, dtype):
    tx = gradtx.partition(GRADTX, LABELS[kind])
    reference = reference_for(LABELS[kind], dtype)
    params = nested_params(dtype)
    grads = gradients(params)
    final, state = run(tx, params, grads, jit=True)
    expected, expected_state = run(reference, params, grads, jit=True)
    assert isinstance(state, gradtx.PartitionState)
    assert_same_layout(state, expected_state)
    if dtype == jnp.float32:
        assert_trees_close(final, expected, dtype)
        assert_trees_close(state, expected_state, dtype)
    else:
        assert_trees_equal(final, expected)
        assert_trees_equal(state, expected_state)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_eager_multi_transform_matches_optax_and_jit(dtype):
    transforms = {"sgd": gradtx.sgd(0.1, momentum=0.9), "scale": gradtx.scale(-0.2)}
    labels = gradtx.path_labels([(r"^dense/", "sgd"), (r".", "scale")])
    tx = gradtx.multi_transform(transforms, labels)
    optax_transforms = {"sgd": optax.sgd(0.1, momentum=0.9), "scale": optax.scale(-0.2)}
    reference = optax.multi_transform(
        optax_transforms if dtype == jnp.float32 else transforms, labels
    )
    params = nested_params(dtype)
    grads = gradients(params)
    final, state = run(tx, params, grads, jit=False)
    expected, expected_state = run(reference, params, grads, jit=True)
    assert_same_layout(state, expected_state)
    assert_trees_close(final, expected, dtype)
    jitted, _ = run(tx, params, grads, jit=True)
    assert_trees_close(final, jitted, dtype)


def test_an_optax_trained_state_loads_and_continues_identically():
    tx = gradtx.partition(GRADTX, RULES)
    reference = optax.partition(OPTAX, RULES)
    params = nested_params(jnp.float32)
    grads = gradients(params, steps=20)
    params10, optax_state = run(reference, params, grads[:10], jit=True)
    state = restore_into(tx.init(params), optax_state)
    assert isinstance(state, gradtx.PartitionState)
    final, _ = run(tx, params10, grads[10:], jit=True, state=state)
    expected, _ = run(reference, params10, grads[10:], jit=True, state=optax_state)
    assert_trees_close(final, expected, jnp.float32)


def test_unused_labels_keep_an_empty_masked_state():
    tx = gradtx.partition(GRADTX, TREE_LABELS)
    state = tx.init(nested_params(jnp.float32))
    assert list(state.inner_states) == ["adam", "sgd", "decay", "unused"]
    unused = state.inner_states["unused"]
    assert isinstance(unused, gradtx.MaskedState)
    assert jax.tree.leaves(unused) == []


def test_labels_may_be_a_prefix_of_a_pair_of_trees():
    generator, discriminator = {"w": jnp.ones(2)}, {"w": jnp.ones(3)}
    tx = gradtx.partition({"g": gradtx.scale(-1.0), "d": gradtx.scale(-0.5)}, ("g", "d"))
    updates, _ = tx.update((generator, discriminator), tx.init((generator, discriminator)))
    assert updates[0]["w"].tolist() == [-1.0, -1.0]
    assert updates[1]["w"].tolist() == [-0.5] * 3


def test_hyperparameters_stay_leaves_and_the_value_jits():
    tx = gradtx.partition({"a": gradtx.scale(2.0), "b": gradtx.trace(0.5)}, {"x": "a", "y": "b"})
    assert jax.tree.leaves(tx) == [2.0, 0.5]
    assert repr(tx) == (
        "partition(transforms={'a': scale(step_size=2.0), 'b': trace(decay=0.5)}, "
        "param_labels={'x': 'a', 'y': 'b'})"
    )
    assert tx == gradtx.partition(
        {"a": gradtx.scale(2.0), "b": gradtx.trace(0.5)}, {"x": "a", "y": "b"}
    )
    assert hash(tx) == hash(
        gradtx.partition([("a", gradtx.scale(2.0)), ("b", gradtx.trace(0.5))], {"x": "a", "y": "b"})
    )
    params = {"x": jnp.ones(2), "y": jnp.ones(2)}
    step = jax.jit(lambda t, s, g: t.update(g, s))
    updates, _ = step(tx, tx.init(params), params)
    assert updates["x"].tolist() == [2.0, 2.0]
    assert tx.transforms["b"] == gradtx.trace(0.5)


def test_multi_transform_is_optax_s_older_name():
    assert gradtx.MultiTransformState is gradtx.PartitionState
    tx = gradtx.multi_transform({"a": gradtx.scale(2.0)}, "a")
    assert repr(tx) == "multi_transform(transforms={'a': scale(step_size=2.0)}, param_labels='a')"
    assert tx != gradtx.partition({"a": gradtx.scale(2.0)}, "a")
    assert isinstance(tx.init(jnp.ones(2)), gradtx.PartitionState)


def test_a_label_without_a_transformation_names_the_label_and_its_leaves():
    with pytest.raises(
        ValueError,
        match=r"the label 'decay', on layers/1/scale, has no transformation; "
        r"transforms has the labels \['adam', 'sgd'\]",
    ):
        gradtx.partition({"adam": gradtx.adam(0.1), "sgd": gradtx.sgd(0.1)}, TREE_LABELS)
    tx = gradtx.partition({"adam": gradtx.adam(0.1)}, LABELS["callable"])
    with pytest.raises(
        ValueError, match=r"the label 'sgd', on dense/bias, layers/0/w, layers/1/scale, has no"
    ):
        tx.init(nested_params(jnp.float32))


def test_a_leaf_matching_no_rule_names_its_path_and_the_rules():
    tx = gradtx.partition({"adam": gradtx.adam(0.1)}, gradtx.path_labels([(r"kernel$", "adam")]))
    with pytest.raises(
        ValueError,
        match=r"path_labels: the parameter 'dense/bias' matches none of the rules "
        r"\[\('kernel\$', 'adam'\)\]",
    ):
        tx.init(nested_params(jnp.float32))


def test_labels_that_do_not_fit_name_the_key_path():
    tx = gradtx.partition({"a": gradtx.scale(1.0)}, {"dense": "a", "frozen": "a"})
    with pytest.raises(ValueError, match=r"\['layers'\]\[0\]\['w'\] is in the parameters but not"):
        tx.init(nested_params(jnp.float32))
    tx = gradtx.partition({"a": gradtx.scale(1.0)}, {"x": "a"})
    state = tx.init({"x": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"\['x'\] is in the param_labels but not in the updates"):
        tx.update({"y": jnp.ones(2)}, state)
    with pytest.raises(ValueError, match="the state does not belong to this partition"):
        tx.update({"x": jnp.ones(2)}, gradtx.EmptyState())


@pytest.mark.parametrize(
    ("rules", "error", "message"),
    [
        ("bias$", TypeError, "rules must be a list of"),
        ([("bias$",)], TypeError, r"rules\[0\] must be a \(pattern, label\) pair"),
        ([(3, "a")], TypeError, r"rules\[0\] pattern must be a regular expression"),
        ([("(", "a")], ValueError, r"rules\[0\] is not a valid regular expression"),
        ([("a", None)], TypeError, r"rules\[0\] label must be hashable and not None"),
    ],
)
def test_bad_rules_name_themselves(rules, error, message):
    with pytest.raises(error, match=message):
        gradtx.path_labels(rules)


def test_bad_arguments_name_themselves():
    with pytest.raises(TypeError, match="param_labels must be a pytree of labels"):
        gradtx.partition({"a": gradtx.scale(1.0)}, None)
    with pytest.raises(TypeError, match=r"transforms\['a'\] must be a gradient transformation"):
        gradtx.partition({"a": 1.0}, "a")
    with pytest.raises(TypeError, match="param_labels leaves must be hashable labels"):
        gradtx.partition({"a": gradtx.scale(1.0)}, {"x": ["a"], "y": {"z": gradtx.scale}})


def test_path_labels_reads_rules_in_order_from_a_list_or_a_dict():
    params = {"dense": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}, "frozen": None}
    first = gradtx.path_labels([(r"bias$", "b"), (r".", "rest")])
    assert first(params) == {"dense": {"bias": "b", "kernel": "rest"}, "frozen": None}
    assert gradtx.path_labels({r".": "rest", r"bias$": "b"})(params)["dense"]["bias"] == "rest"
    assert first == gradtx.path_labels({r"bias$": "b", r".": "rest"})
    assert repr(first) == "path_labels(rules=(('bias$', 'b'), ('.', 'rest')))"


def test_explain_labels_lists_the_leaves_of_each_rule():
    params = nested_params(jnp.float32)
    rules = gradtx.path_labels([(r"bias$", "sgd"), (r"norm", "sgd"), (r"^dense/", "adam")])
    assert gradtx.explain_labels(rules, params) == (
        "rule 0: 'bias$' -> 'sgd'\n"
        "  dense/bias\n"
        "rule 1: 'norm' -> 'sgd'\n"
        "  (none)\n"
        "rule 2: '^dense/' -> 'adam'\n"
        "  dense/kernel\n"
        "matched by no rule:\n"
        "  layers/0/w\n"
        "  layers/1/scale\n"
        "  layers/1/w"
    )
    assert gradtx.explain_labels(gradtx.partition(GRADTX, RULES), params).startswith(
        "rule 0: 'bias$' -> 'sgd'\n  dense/bias\nrule 1: 'scale$' -> 'decay'\n  layers/1/scale\n"
    )


def test_explain_labels_groups_leaves_by_label_for_trees_and_callables():
    params = nested_params(jnp.float32)
    assert gradtx.explain_labels(LABELS["prefix"], params) == (
        "label 'adam':\n  dense/bias\n  dense/kernel\n"
        "label 'sgd':\n  layers/0/w\n  layers/1/scale\n  layers/1/w"
    )
    assert gradtx.explain_labels(LABELS["callable"], params) == (
        "label 'sgd':\n  dense/bias\n  layers/0/w\n  layers/1/scale\n"
        "label 'adam':\n  dense/kernel\n  layers/1/w"
    )


def test_config_writes_transforms_and_labels_as_json_objects():
    tx = gradtx.partition(
        {"decay": gradtx.trace(0.9), "rest": gradtx.scale(-0.5)}, {"w": "decay", "b": "rest"}
    )
    config = gradtx.to_config(tx)
    assert config == {
        "name": "partition",
        "transforms": {
            "decay": {"name": "trace", "decay": 0.9, "nesterov": False, "accumulator_dtype": None},
            "rest": {"name": "scale", "step_size": -0.5},
        },
        "param_labels": {"b": "rest", "w": "decay"},
        "mask_compatible_extra_args": False,
    }
    assert gradtx.from_config(config) == tx
    assert gradtx.from_config(config, ["transforms.decay.decay=0.5"]).transforms["decay"] == (
        gradtx.trace(0.5)
    )


def test_config_refuses_what_it_cannot_write():
    with pytest.raises(
        ConfigError, match=r"param_labels: cannot write the Python callable.*path_labels"
    ):
        gradtx.to_config(gradtx.partition({"a": gradtx.scale(1.0)}, LABELS["callable"]))
    with pytest.raises(
        ConfigError, match="transforms: can be written to a config only with string keys"
    ):
        gradtx.to_config(gradtx.partition({0: gradtx.scale(1.0)}, 0))
    with pytest.raises(ConfigError, match="would read back as a config"):
        gradtx.to_config(gradtx.partition({"name": gradtx.scale(1.0)}, "name"))
