"""Validation with clear messages: hyperparameter ranges and tree structures.

Also the one rule for quoting user text in a message (:func:`capped`,
:func:`capped_repr`): every module of gradtx quotes values, paths and names
through these two, so no input can flood a message or make building one fail.
"""

import functools
import reprlib
from collections.abc import Mapping
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
QUOTE_LIMIT = 200
"""The most characters of one piece of user text (a value, a path, a name) a message quotes."""


def capped(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` cut in the middle to at most ``limit`` characters.

    Args:
      text: e.g. a path or a message that may hold a huge user value.
      limit: the most characters returned.

    Returns:
      ``text``, or its start and end joined by ``"..."``.

    Example:
      >>> capped("a" * 300 + "b", limit=9)
      'aaa...aab'
    """
    if len(text) <= limit:
        return text
    keep = (limit - 3) // 2
    return f"{text[:keep]}...{text[len(text) - keep :]}"


@functools.lru_cache(maxsize=8)
def _repr_for(limit: int) -> reprlib.Repr:
    """A ``reprlib.Repr`` that leaves room under ``limit`` for the text around a value."""
    shortened = reprlib.Repr()
    shortened.maxstring = shortened.maxother = shortened.maxlong = max(limit - 40, 20)
    shortened.maxlist = shortened.maxtuple = shortened.maxdict = shortened.maxset = 8
    shortened.maxlevel = 4
    return shortened


def capped_repr(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` in at most ``limit`` characters, for an error message.

    Safe for any value: a 1 MB string, an integer too long for ``repr``
    (more than 4300 digits) or an object whose ``__repr__`` fails.

    Args:
      value: the value to quote.
      limit: the most characters returned.

    Returns:
      A short repr.

    Example:
      >>> capped_repr(10**5000)
      '<an integer of 16610 bits>'
      >>> len(capped_repr("x" * 10**6)) <= 200
      True
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 512:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        text = _repr_for(limit).repr(value)
    except Exception:  # a nested huge integer or a failing __repr__: say what it is
        text = f"<{type(value).__name__}>"
    return capped(text, limit)


def _concrete(value: Any) -> np.ndarray | None:
    """The value as a NumPy array, or None if it is traced, absent or a callable."""
    if value is None or callable(value) or isinstance(value, jax.core.Tracer):
        return None
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError) as error:
        raise TypeError(f"expected a number or an array, got {capped_repr(value)}") from error
    # jnp.issubdtype knows ml_dtypes (bfloat16, float8...), np.issubdtype does not.
    if array.dtype == object or not jnp.issubdtype(array.dtype, jnp.number):
        if array.dtype != np.bool_:
            raise TypeError(f"expected a number or an array, got {capped_repr(value)}")
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
        raise TypeError(f"{name} must be a number or an array, got {capped_repr(value)}") from error
    if array is None:
        return
    if np.iscomplexobj(array):
        raise TypeError(f"{name} must be real, got {capped_repr(value)}")
    ok = np.ones(array.shape, dtype=bool)
    if low is not None:
        ok &= array >= low if low_inclusive else array > low
    if high is not None:
        ok &= array <= high if high_inclusive else array < high
    ok &= ~np.isnan(array.astype(np.float64))
    if not np.all(ok):
        expected = _describe(low, high, low_inclusive, high_inclusive)
        raise ValueError(f"{name} must be {expected}, got {capped_repr(value)}")


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


def check_hyperparameter(
    name: str, value: Any, *, scalar: bool = True, finite: bool = True
) -> None:
    """Raises if a concrete hyperparameter is not a usable number (run for every field).

    Schedules, transformations, other callables and traced values pass: they
    are checked where they are built or cannot be checked at all. A container
    of transformations or schedules (``chain``'s members) passes too. ``None``
    and arrays pass here: ``None`` marks an unbatched field of a ``jax.vmap``
    ``in_axes`` spec and an array is a batch of values (one per trial) for
    ``jax.vmap``; :func:`check_hyperparameter_ready` refuses both in ``update``.

    Args:
      name: the field's name, used in the message.
      value: the value given.
      scalar: whether the value is one number (False for a sequence such as a
        schedule's boundaries).
      finite: whether infinity is refused (it is allowed where it means "no
        limit", as in clipping thresholds).

    Raises:
      TypeError: for a boolean, a string or another non-numeric value.
      ValueError: for NaN, infinity (when ``finite``) or a list where a number
        is needed.
    """
    if value is None or _is_deferred(value):
        return
    if isinstance(value, (list, tuple, Mapping)):
        members = value.values() if isinstance(value, Mapping) else value
        if scalar and not all(_is_deferred(member) for member in members):
            raise ValueError(f"{name} must be a single number, got {capped_repr(value)}")
        return
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{name} must be a number, got {capped_repr(value)}")
    try:
        array = _concrete(value)
    except TypeError:
        raise TypeError(f"{name} must be a number, got {capped_repr(value)}") from None
    if array is None:
        return
    if array.dtype == np.bool_:
        raise TypeError(f"{name} must be a number, got {capped_repr(value)}")
    real = np.abs(array) if np.iscomplexobj(array) else array
    real = real.astype(np.float64)
    if np.any(np.isnan(real)):
        raise ValueError(f"{name} must be a number, not NaN, got {capped_repr(value)}")
    if finite and np.any(np.isinf(real)):
        raise ValueError(f"{name} must be finite, got {capped_repr(value)}")


def check_hyperparameter_ready(name: str, value: Any, *, optional: bool, scalar: bool) -> None:
    """Raises if a hyperparameter cannot be used by ``update``: None, or not one number.

    Run when an update is traced (under ``jax.vmap`` a batched value is one
    number per trial by then), so it costs nothing at run time.

    Args:
      name: the field's name, used in the message.
      value: the field's value.
      optional: whether ``None`` has a meaning for this field.
      scalar: whether the value must be 0-d.

    Raises:
      ValueError: naming the field, for None or an array of more than 0 dims.
    """
    if value is None:
        if not optional:
            raise ValueError(
                f"{name} is None; it needs a number (None only has a meaning in a "
                "jax.vmap in_axes spec)"
            )
        return
    if not scalar or _is_deferred(value) and not isinstance(value, jax.core.Tracer):
        return
    shape = np.shape(value) if not isinstance(value, (list, tuple, Mapping)) else ()
    if shape:
        raise ValueError(
            f"{name} has shape {shape}: a hyperparameter is one number, applied to every "
            "leaf alike (use gradtx.partition for per-group values); an optimizer "
            "holding one value per trial must be run under jax.vmap"
        )


def _is_deferred(value: Any) -> bool:
    """A schedule, transformation, user callable or traced value: not checked here."""
    return callable(value) or isinstance(value, jax.core.Tracer) or hasattr(value, "init")


_NON_FLOAT_HINT = (
    "optimizer rules need floating-point (or complex) leaves, and an integer "
    "update would be truncated (a small step to zero) when applied; leave such "
    "leaves out with gradtx.masked(tx, mask) or gradtx.partition(..., set_to_zero()), "
    "or make them floating point"
)


def leaf_dtype(leaf: Any) -> np.dtype | None:
    """The dtype of a leaf (a Python number's as JAX would make it), or None."""
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None:
        return np.dtype(dtype)
    try:
        return np.dtype(jnp.result_type(leaf))
    except (TypeError, ValueError):
        return None


def is_floating(leaf: Any) -> bool:
    """Whether a leaf has a floating or complex dtype (``float0`` is neither)."""
    dtype = leaf_dtype(leaf)
    return dtype is None or (dtype != jax.dtypes.float0 and jnp.issubdtype(dtype, jnp.inexact))


def key_path(path: tuple[Any, ...]) -> str:
    """A key path as messages write it: ``"['layer']['w']"``, ``"<root>"`` for the top."""
    return jax.tree_util.keystr(path) or "<root>"


def check_floating_leaves(name: str, updates: Any, params: Any = None) -> None:
    """Raises TypeError naming the key path of an integer or boolean gradient or parameter.

    Only parameters whose gradient is present are looked at: an integer leaf
    frozen with ``None`` (or masked out before this rule) is left alone. The
    check reads dtypes only, so under ``jax.jit`` it costs nothing at run time.

    Args:
      name: the transformation's name, for the message.
      updates: the gradients given to ``update``.
      params: the parameters given to ``update``, if any.

    Raises:
      TypeError: naming the key path and the dtype.
    """
    update_leaves = jax.tree.leaves(updates)
    if all(map(is_floating, update_leaves)) and (
        params is None or all(map(is_floating, jax.tree.leaves(params)))
    ):
        return
    present = _refuse_non_floating(name, "gradient", updates)
    if params is not None:
        _refuse_non_floating(name, "parameter", params, only=present)


def _refuse_non_floating(name: str, kind: str, tree: Any, only: set[Any] | None = None) -> set[Any]:
    """Raises TypeError at the first non-floating leaf (of those at ``only``); returns the paths."""
    paths = set()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if (only is None or path in only) and not is_floating(leaf):
            raise TypeError(
                f"{name}: the {kind} at {key_path(path)} has dtype {leaf_dtype(leaf)}; "
                f"{_NON_FLOAT_HINT}"
            )
        paths.add(path)
    return paths


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
    return [key_path(path) for path, _ in leaves]


def _check_shapes(tree: Any, reference: Any, tree_name: str, reference_name: str) -> None:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=trees.is_none)[0]
    reference_leaves = jax.tree.leaves(reference, is_leaf=trees.is_none)
    for (path, leaf), reference_leaf in zip(leaves, reference_leaves):
        shape = np.shape(leaf) if leaf is not None else None
        reference_shape = np.shape(reference_leaf) if reference_leaf is not None else None
        if shape != reference_shape:
            raise ValueError(
                f"{key_path(path)} has shape {shape} in the "
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
