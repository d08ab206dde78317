"""Comparing optimizer states across libraries: by layout, then leaf by leaf.

Shared by test_optax_interop.py and test_state_interop.py. gradtx's state classes
are its own (``gradtx.ScaleByAdamState`` is not ``optax.ScaleByAdamState``), so
``jax.tree.structure`` always differs; what flax.serialization and Orbax key on
is the layout: NamedTuple class and field names, dict keys, sequence lengths,
shapes and dtypes.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def layout(tree: Any) -> Any:
    """A state's structure by names, with shape and dtype for each leaf."""
    if isinstance(tree, nnx.Variable):
        return layout(tree.get_value())
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        fields = {name: layout(getattr(tree, name)) for name in tree._fields}
        return ("namedtuple", type(tree).__name__, fields)
    if isinstance(tree, (tuple, list)):
        return ("sequence", type(tree).__name__, [layout(item) for item in tree])
    if isinstance(tree, Mapping):
        return ("mapping", type(tree).__name__, {key: layout(value) for key, value in tree.items()})
    if tree is None:
        return None
    array = jnp.asarray(tree)
    return ("leaf", array.shape, str(array.dtype))


def assert_trees_close(actual: Any, expected: Any, rtol: float, atol: float) -> None:
    """Same key paths, same dtypes, values within tolerance (ints exactly)."""
    actual_leaves = jax.tree_util.tree_leaves_with_path(actual)
    expected_leaves = jax.tree_util.tree_leaves_with_path(expected)
    actual_paths = [jax.tree_util.keystr(path) for path, _ in actual_leaves]
    assert actual_paths == [jax.tree_util.keystr(path) for path, _ in expected_leaves]
    for path, (_, a), (_, e) in zip(actual_paths, actual_leaves, expected_leaves):
        a, e = np.asarray(a), np.asarray(e)
        assert a.dtype == e.dtype, (path, a.dtype, e.dtype)
        if jnp.issubdtype(a.dtype, jnp.inexact):
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=path)
        else:
            np.testing.assert_array_equal(a, e, err_msg=path)


def first_difference(actual: Any, expected: Any, path: str = "state") -> str | None:
    """Where two layouts first differ, and how; None if they are equal."""
    if actual == expected:
        return None
    if not (isinstance(actual, tuple) and isinstance(expected, tuple)):
        return f"{path}: {actual} != {expected}"
    kind, name, children = actual
    expected_kind, expected_name, expected_children = expected
    if kind == "leaf" or (kind, name) != (expected_kind, expected_name):
        return f"{path}: {_summary(actual)} != {_summary(expected)}"
    if kind == "sequence":
        children, expected_children = dict(enumerate(children)), dict(enumerate(expected_children))
    if children.keys() != expected_children.keys():
        return f"{path}: {_summary(actual)} != {_summary(expected)}"
    for key, child in children.items():
        step = f".{key}" if kind == "namedtuple" else f"[{key!r}]"
        difference = first_difference(child, expected_children[key], path + step)
        if difference:
            return difference
    return None


def _summary(node: Any) -> str:
    if not isinstance(node, tuple):
        return repr(node)
    kind, name, children = node
    if kind == "leaf":
        return f"{children}[{','.join(map(str, name))}]"
    keys = range(len(children)) if kind == "sequence" else children
    return f"{name}({', '.join(map(str, keys))})"


def assert_same_state(actual: Any, expected: Any, rtol: float, atol: float) -> None:
    """The layouts are equal and so are the leaves."""
    difference = first_difference(layout(actual), layout(expected))
    assert difference is None, f"the layouts differ (actual != expected) at {difference}"
    assert_trees_close(actual, expected, rtol=rtol, atol=atol)
