"""The bounds on reading a config, and the checks of the arrays a config holds.

A config is small: an optimizer's has a few dozen values. What reads one (a
file, a command line's overrides, a checkpoint) may come from anyone, so a
crafted config must not hang, recurse or allocate: it nests at most
:data:`MAX_DEPTH` levels of mappings and lists (so no walk exhausts the
stack), holds at most :data:`MAX_VALUES` values, the elements of its arrays
included (so nothing allocates or runs long), and an override is at most
:data:`MAX_OVERRIDE_LENGTH` characters. :func:`check_limits` checks the first
two without recursing and stops at the limit, so even a structure that shares
one list many times over (a "billion laughs") is refused fast.

An array is written as ``{"array": <nested lists>, "dtype": "float32"}``.
:func:`decode_array` checks every element against the dtype before NumPy sees
it, so an element that does not fit is refused by path rather than truncated,
wrapped around or read from a string.

:class:`ConfigError`, the one error all of this raises, is defined here
(and imported into :mod:`gradtx.config`, where users find it) so that this
module needs nothing from the rest of the config code.
"""

import functools
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from gradtx.checks import capped, capped_repr

Path = tuple[str | int, ...]

MAX_DEPTH = 64
"""The most levels of mappings and lists a config may nest (the top mapping is one)."""
MAX_VALUES = 1_000_000
"""The most values (entries of mappings and lists, elements of arrays) a config may hold."""
MAX_OVERRIDE_LENGTH = 65_536
"""The most characters one ``"path=value"`` override may have."""
ARRAY_KEYS = frozenset({"array", "dtype"})
"""The keys of a mapping that is an array: ``{"array": [...], "dtype": "float32"}``."""
_SCALARS = (str, int, float, type(None))
_CONTAINERS = (Mapping, list, tuple)


class ConfigError(ValueError):
    """A config that cannot be read, built or written, naming where and why.

    The message starts with the place in the config, e.g.
    ``transforms[1].b2: must be in [0, 1), got 1.5``, or with the file and line
    for a file that does not parse.

    Attributes:
      path: the place in the config (``"transforms[1].b2"``; ``""`` for the top).
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


def format_path(path: Path) -> str:
    """A config path as text: ``("transforms", 1, "b2")`` -> ``"transforms[1].b2"``.

    Args:
      path: field names and list indices from the top of the config.

    Returns:
      The path as text, ``""`` for the top level.
    """
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.isprintable():  # a key with a newline must not split the message
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return text


def error_at(path: Path, problem: str) -> ConfigError:
    """A :class:`ConfigError` whose message starts with ``path`` (cut), for ``problem``.

    Args:
      path: the place in the config.
      problem: what is wrong there.

    Returns:
      The error, with ``path`` set to the place as text.
    """
    location = capped(format_path(path))
    return ConfigError(f"{location or 'config'}: {problem}", path=location)


def check_limits(config: Any) -> None:
    """Raises unless a config is within :data:`MAX_DEPTH` levels and :data:`MAX_VALUES` values.

    The walk is iterative, so a deep or self-referencing structure cannot
    exhaust the stack, and it stops at the limit, so a structure that shares
    one list many times over (a "billion laughs") cannot make it run long.

    Args:
      config: a config, or any part of one.

    Raises:
      ConfigError: naming the limit and the path (cut) where it was reached.
    """
    stack: list[tuple[Any, Path]] = [(config, ())] if isinstance(config, _CONTAINERS) else []
    count = 0
    while stack:
        node, path = stack.pop()
        if len(path) >= MAX_DEPTH:
            raise error_at(path, f"nests deeper than {MAX_DEPTH} levels of mappings and lists")
        count += len(node)
        if count > MAX_VALUES:
            raise error_at(path, f"the config holds more than {MAX_VALUES:,} values")
        items = node.items() if isinstance(node, Mapping) else enumerate(node)
        for key, child in items:
            # isinstance against the Mapping ABC is slow: rule out plain scalars first.
            if not isinstance(child, _SCALARS) and isinstance(child, _CONTAINERS):
                part = key if isinstance(key, (str, int)) else capped_repr(key)
                stack.append((child, path + (part,)))


def decode_array(value: Mapping[str, Any], path: Path) -> np.ndarray:
    """The array an ``{"array": ..., "dtype": ...}`` mapping describes, every element checked.

    Args:
      value: a mapping with exactly the keys :data:`ARRAY_KEYS`.
      path: its place in the config, for messages.

    Returns:
      The array, of the dtype named (in native byte order).

    Raises:
      ConfigError: naming the path of an unknown or non-numeric dtype, of an
        element that does not fit the dtype, or of lists of different lengths.
    """
    dtype = _array_dtype(value["dtype"], path + ("dtype",))
    data = value["array"]
    _check_array_data(data, dtype, path + ("array",))
    try:
        return np.asarray(data, dtype=dtype)
    except ValueError:  # the one problem left: lists of different lengths
        raise error_at(
            path + ("array",),
            f"must be rectangular: nested lists of equal lengths (an array of {dtype.name})",
        ) from None


def _array_dtype(name: Any, path: Path) -> np.dtype:
    if not isinstance(name, str):
        raise error_at(path, f"must name a dtype, such as 'float32', got {capped_repr(name)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "a": refused below anyway
            dtype = np.dtype(name)
    except (TypeError, ValueError, SyntaxError):  # NumPy parses "i4,,f8" as Python
        raise error_at(path, f"unknown dtype {capped_repr(name)}") from None
    # jnp.issubdtype knows bfloat16 and the other ml_dtypes (float8_*, int4).
    if dtype != np.bool_ and not jnp.issubdtype(dtype, jnp.number):
        raise error_at(path, f"must be a numeric or boolean dtype, got {dtype.name!r}")
    return np.dtype(dtype.name)  # native byte order: ">f4" is float32


def _check_array_data(data: Any, dtype: np.dtype, path: Path) -> None:
    """Checks that every element of an array's nested lists fits ``dtype``.

    NumPy would raise OverflowError for ``1000`` as int8, silently truncate
    ``2.5`` to an integer dtype or ``2`` to ``True``, and read the string
    ``"1.0"`` as a number; a config says what it means instead. The size is
    bounded already: the elements count towards :data:`MAX_VALUES`.
    """
    problem = _element_problem(dtype)
    stack: list[tuple[Any, Path]] = [(data, path)]
    while stack:
        node, where = stack.pop()
        children = enumerate(node) if isinstance(node, (list, tuple)) else [(None, node)]
        for position, child in children:
            place = where if position is None else where + (position,)
            if isinstance(child, (list, tuple)):
                stack.append((child, place))
            elif message := problem(child):
                raise error_at(place, message)


def _element_problem(dtype: np.dtype) -> Callable[[Any], str | None]:
    """What is wrong with an element for ``dtype`` (None if nothing), set up once per array."""
    if dtype == np.bool_:
        return _boolean_problem
    if jnp.issubdtype(dtype, jnp.integer):
        info = jnp.iinfo(dtype)
        return functools.partial(_integer_problem, dtype.name, int(info.min), int(info.max))
    return functools.partial(_number_problem, dtype.name, float(jnp.finfo(dtype).max))


def _boolean_problem(element: Any) -> str | None:
    if isinstance(element, bool):
        return None
    return f"must be true or false for dtype bool, got {capped_repr(element)}"


def _integer_problem(name: str, low: int, high: int, element: Any) -> str | None:
    if not isinstance(element, int) or isinstance(element, bool):
        return f"must be an integer for dtype {name}, got {capped_repr(element)}"
    if not low <= element <= high:
        return f"{capped_repr(element)} is out of range for {name} ({low} to {high})"
    return None


def _number_problem(name: str, largest: float, element: Any) -> str | None:
    if not isinstance(element, (int, float)) or isinstance(element, bool):
        return f"must be a number for dtype {name}, got {capped_repr(element)}"
    # inf and nan are values of the dtype: the class decides whether to allow them.
    if abs(element) > largest and not (isinstance(element, float) and math.isinf(element)):
        return f"{capped_repr(element)} is out of range for {name} (largest {largest:g})"
    return None
