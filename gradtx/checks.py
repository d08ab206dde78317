"""Validation with clear messages: hyperparameter ranges and tree structures."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import trees

PARAMS_REQUIRED = (
    "{name} needs the current parameters: call update(updates, state, params) "
    "with params, not update(updates, state)"
)
VALUE_REQUIRED = (
    "{name} needs the current loss: call update(updates, state, params, value=loss) "
    "(chain and the other combinators pass value= on)"
)


def _concrete(value: Any) -> np.ndarray | None:
    """The value as a NumPy array, or None if it is traced, absent or a callable."""
    if value is None or callable(value) or isinstance(value, jax.core.Tracer):
        return None
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError) as error:
        raise TypeError(f"expected a number or an array, got {value!r}") from error
    # jnp.issubdtype knows ml_dtypes (bfloat16, float8...), np.issubdtype does not.
    if array.dtype == object or not jnp.issubdtype(array.dtype, jnp.number):
        if array.dtype != np.bool_:
            raise TypeError(f"expected a number or an array, got {value!r}")
    return array


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """Raises ValueError naming ``name`` if a concrete ``value`` is out of range.

    Traced values, schedules and ``None`` pass unchecked: they are checked where
    they become concrete, or cannot be checked at all.

    Args:
      name: the argument's name, used in the message.
      value: the value to check.
      low: the lower bound, if any.
      high: the upper bound, if any.
      low_inclusive: whether ``low`` itself is allowed.
      high_inclusive: whether ``high`` itself is allowed.

    Raises:
      ValueError: if any element is outside the range or is NaN.
      TypeError: if the value is not numeric.
    """
    try:
        array = _concrete(value)
    except TypeError as error:
        raise TypeError(f"{name} must be a number or an array, got {value!r}") from error
    if array is None:
        return
    if np.iscomplexobj(array):
        raise TypeError(f"{name} must be real, got {value!r}")
    ok = np.ones(array.shape, dtype=bool)
    if low is not None:
        ok &= array >= low if low_inclusive else array > low
    if high is not None:
        ok &= array <= high if high_inclusive else array < high
    ok &= ~np.isnan(array.astype(np.float64))
    if not np.all(ok):
        expected = _describe(low, high, low_inclusive, high_inclusive)
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _describe(
    low: float | None, high: float | None, low_inclusive: bool, high_inclusive: bool
) -> str:
    if low is not None and high is not None:
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        return f"in {left}{low:g}, {high:g}{right}"
    if low is not None:
        return f"{'>=' if low_inclusive else '>'} {low:g}"
    if high is not None:
        return f"{'<=' if high_inclusive else '<'} {high:g}"
    return "a number, not NaN"  # the only value refused without bounds


def check_state_fields(state: Any, state_type: type, name: str) -> None:
    """Raises ValueError if ``state`` lacks the fields of ``state_type`` (another optimizer's).

    Any object with those fields is accepted, Optax's state of the same name
    included.

    Args:
      state: the state given to ``update``.
      state_type: the NamedTuple class the transformation's ``init`` returns.
      name: the transformation's name, for the message.

    Raises:
      ValueError: naming the transformation, the state's type and the fields.
    """
    fields: tuple[str, ...] = getattr(state_type, "_fields", ())
    if not all(hasattr(state, field) for field in fields):
        raise ValueError(
            f"{name} was given a {type(state).__name__} as its state, which is not "
            f"its own ({state_type.__name__} with fields {', '.join(fields)}); pass the "
            "state that this optimizer's init returned"
        )


def check_trees_match(tree: Any, reference: Any, *, tree_name: str, reference_name: str) -> None:
    """Raises ValueError naming the first key path where two trees differ.

    Args:
      tree: the tree supplied by the caller (e.g. the gradients).
      reference: the tree it must match (e.g. a moment in the optimizer state).
      tree_name: how the message calls ``tree``.
      reference_name: how the message calls ``reference``.

    Raises:
      ValueError: if the structures or leaf shapes differ.
    """
    is_none = trees.is_none  # None marks a frozen leaf in Optax
    if trees.structure(tree, is_leaf=is_none) == trees.structure(reference, is_leaf=is_none):
        _check_shapes(tree, reference, tree_name, reference_name)
        return
    tree_paths = _paths(tree)
    reference_paths = _paths(reference)
    tree_keys, reference_keys = set(tree_paths), set(reference_paths)
    for path in reference_paths:
        if path not in tree_keys:
            raise ValueError(
                f"{path} is missing from the {tree_name} (it is in the {reference_name})"
            )
    for path in tree_paths:
        if path not in reference_keys:
            raise ValueError(f"{path} is in the {tree_name} but not in the {reference_name}")
    raise ValueError(
        f"the {tree_name} and the {reference_name} have the same key paths but "
        f"different container types: {jax.tree.structure(tree)} vs "
        f"{jax.tree.structure(reference)}"
    )


def _paths(tree: Any) -> list[str]:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=trees.is_none)[0]
    return [jax.tree_util.keystr(path) or "<root>" for path, _ in leaves]


def _check_shapes(tree: Any, reference: Any, tree_name: str, reference_name: str) -> None:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=trees.is_none)[0]
    reference_leaves = jax.tree.leaves(reference, is_leaf=trees.is_none)
    for (path, leaf), reference_leaf in zip(leaves, reference_leaves):
        shape = np.shape(leaf) if leaf is not None else None
        reference_shape = np.shape(reference_leaf) if reference_leaf is not None else None
        if shape != reference_shape:
            raise ValueError(
                f"{jax.tree_util.keystr(path) or '<root>'} has shape {shape} in the "
                f"{tree_name} but {reference_shape} in the {reference_name}"
            )


def concrete_value(value: Any) -> Any:
    """The value as a NumPy array if it is concrete, else None."""
    try:
        return _concrete(value)
    except TypeError:
        return None


def concrete_pair(first: Any, second: Any) -> tuple[Any, Any] | None:
    """Both values as NumPy arrays if both are concrete scalars, else None."""
    a, b = concrete_value(first), concrete_value(second)
    if a is None or b is None or a.ndim or b.ndim:
        return None
    return a, b
