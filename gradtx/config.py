"""Optimizers as plain data: :func:`to_config`, :func:`from_config` and overrides.

A config is what ``json.loads`` returns: nested dicts, lists, numbers,
booleans, strings and None. A transformation or schedule is a mapping whose
``"name"`` key names a registered class and whose other keys are its
constructor arguments::

    {"name": "adamw",
     "learning_rate": {"name": "exponential_decay", "init_value": 0.001,
                       "transition_steps": 1000, "decay_rate": 0.9, ...},
     "b1": 0.9, ..., "mask": {"name": "path_mask", "include": [],
                              "exclude": ["bias$", "scale$"]}}

Tuples are written as lists; arrays (and NumPy or JAX scalars) as
``{"array": <nested lists>, "dtype": "float32"}`` so they come back with
their dtype; a mask given as a tree of booleans as that tree (nested dicts).
:func:`from_config` builds only names found in :mod:`gradtx.registry`: it
never imports a module, evaluates a string or unpickles.

Reading a config is bounded, so a small hostile input cannot exhaust the
stack, the memory or the screen: a config nests at most :data:`MAX_DEPTH`
levels of mappings and lists and holds at most :data:`MAX_VALUES` values
(an array counts its elements), an override is at most
:data:`MAX_OVERRIDE_LENGTH` characters (the bounds and the array checks are
:mod:`gradtx.config_limits`), and an error message shows at most about 200
characters of any value it quotes (:func:`gradtx.checks.capped_repr`).
Whatever data it is given, :func:`from_config` returns or raises
:class:`ConfigError`.
"""

import copy
import dataclasses
import difflib
import json
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from gradtx import masks, registry
from gradtx.base import Value, none_allowed
from gradtx.checks import capped, capped_repr
from gradtx.config_limits import (
    ARRAY_KEYS,
    MAX_DEPTH,
    MAX_OVERRIDE_LENGTH,
    MAX_VALUES,
    ConfigError,
    Path,
    check_limits,
    decode_array,
    error_at,
    format_path,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_OVERRIDE_LENGTH",
    "MAX_VALUES",
    "ConfigError",
    "apply_overrides",
    "check_limits",
    "format_path",
    "from_config",
    "parse_value",
    "to_config",
    "unknown_field_message",
    "unknown_name_message",
]

_CLASS_MESSAGE_LIMIT = 500  # characters of a message a class raised, shown after the path
_CLOSE_MATCH_LIMIT = 100  # longer names are not compared with difflib (quadratic)

_MASK_HINT = (
    "make it serializable with gradtx.path_mask(include=..., exclude=...) (regular "
    "expressions over each parameter's path, e.g. exclude=[r'bias$']) or give a "
    "tree of booleans"
)
_CALLABLE_HINT = (
    "a config can only name registered classes: use a gradtx schedule (e.g. "
    "exponential_decay), or write a gradtx.Schedule or gradtx.Transformation "
    "subclass and decorate it with @gradtx.register (see docs/write_your_own.md)"
)
_LABELS_HINT = (
    "make it serializable with gradtx.path_labels([(regex, label), ...]) (rules over "
    "each parameter's path, first match wins) or give a tree of labels"
)
_SKIP_HINT = (
    "use gradtx.skip_not_finite() or gradtx.skip_large_updates(max_squared_norm), "
    "or a registered gradtx.Value subclass with the same call signature"
)
_DIMENSION_NUMBERS_HINT = (
    "give a gradtx.MuonDimensionNumbers, or a tree (nested dicts/lists, a prefix of "
    "the params) of them and None, instead of a function"
)
_HINTS = {
    "weight_dimension_numbers": _DIMENSION_NUMBERS_HINT,
    "muon_weight_dimension_numbers": _DIMENSION_NUMBERS_HINT,
    "mask": _MASK_HINT,
    "freeze_mask": _MASK_HINT,
    "param_labels": _LABELS_HINT,
    "should_skip_update_fn": _SKIP_HINT,
}


def to_config(tx: Value) -> dict[str, Any]:
    """Describes a transformation or schedule as plain, JSON-serializable data.

    An alias keeps its identity (``adamw(...)`` is written as ``adamw`` with its
    arguments, not as the chain it expands to); a schedule or mask inside a
    transformation is written as a nested config. Every constructor argument is
    written, defaults included, so a saved config does not change meaning if a
    default changes. ``from_config(to_config(tx)) == tx``.

    Args:
      tx: a gradtx transformation, alias, chain, schedule or mask, built-in or
        registered with :func:`gradtx.register`.

    Returns:
      A dict of dicts, lists, numbers, booleans, strings and None.

    Raises:
      ConfigError: naming the path of a part that cannot be written: a plain
        Python callable (a lambda mask or schedule), an Optax transformation
        (``foreign``), an unregistered class or a traced value.

    Example:
      >>> import gradtx
      >>> gradtx.to_config(gradtx.sgd(0.1, momentum=0.9))["momentum"]
      0.9
      >>> gradtx.to_config(gradtx.scale_by_learning_rate(0.1))
      {'name': 'scale_by_learning_rate', 'learning_rate': 0.1, 'flip_sign': True}
    """
    if not isinstance(tx, Value):
        raise TypeError(
            f"to_config expects a gradtx transformation or schedule, got {capped_repr(tx)}"
        )
    return _encode_value(tx, ())


def _encode_value(obj: Value, path: Path) -> dict[str, Any]:
    cls = type(obj)
    name = registry.name_of(cls)
    if name is None:
        reason = registry.NOT_SERIALIZABLE.get(cls) or (
            f"{cls.__module__}.{cls.__qualname__} is not registered; decorate the "
            "class with @gradtx.register so a config can name it"
        )
        raise error_at(path, f"cannot write {cls.__name__} to a config: {reason}")
    config: dict[str, Any] = {"name": name}
    for field in registry.config_fields(cls):
        config[field.name] = _encode(getattr(obj, field.name), path + (field.name,))
    return config


def _encode(value: Any, path: Path) -> Any:
    if isinstance(value, Value):
        return _encode_value(value, path)
    if isinstance(value, jax.core.Tracer):
        raise error_at(path, "is a traced value; call to_config outside jax.jit/vmap/grad")
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        array = np.asarray(value)
        return {"array": array.tolist(), "dtype": array.dtype.name}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_encode(item, path + (position,)) for position, item in enumerate(value)]
    if isinstance(value, masks.FrozenTree):
        return _encode_mask_tree(value.tree, path)
    if isinstance(value, Mapping):
        return _encode_mapping(value, path)
    if callable(value):
        hint = _HINTS.get(str(path[-1]) if path else "", _CALLABLE_HINT)
        raise error_at(
            path, f"cannot write the Python callable {capped_repr(value)} to a config; {hint}"
        )
    raise error_at(
        path, f"cannot write a {type(value).__name__} ({capped_repr(value)}) to a config"
    )


def _encode_mapping(mapping: Mapping[Any, Any], path: Path) -> dict[str, Any]:
    """A mapping of values (partition's transforms by label) as a JSON object."""
    for key in mapping:
        if not isinstance(key, str):
            raise error_at(
                path, f"can be written to a config only with string keys, got {capped_repr(key)}"
            )
    if "name" in mapping or set(mapping) == ARRAY_KEYS:
        raise error_at(
            path,
            f"a mapping with the keys {sorted(mapping)} would read back as a config; "
            "rename its keys",
        )
    return {key: _encode(item, path + (key,)) for key, item in mapping.items()}


def _encode_mask_tree(tree: Any, path: Path) -> Any:
    def encode(node: Any, where: Path) -> Any:
        if isinstance(node, (bool, str)):  # booleans of a mask, or labels of a partition
            return node
        if isinstance(node, dict) and all(isinstance(key, str) for key in node):
            return {key: encode(child, where + (key,)) for key, child in node.items()}
        raise error_at(
            where,
            f"a mask tree can be written only as nested dicts of booleans, got "
            f"{type(node).__name__}; use gradtx.path_mask(include=..., exclude=...) instead",
        )

    if isinstance(tree, dict) and ("name" in tree or set(tree) == ARRAY_KEYS):
        raise error_at(
            path,
            f"a mask tree with the top-level keys {sorted(tree)} would read back as a "
            "config; use gradtx.path_mask(include=..., exclude=...) instead",
        )
    return encode(tree, path)


def from_config(config: Mapping[str, Any], overrides: Sequence[str] = ()) -> Any:
    """Builds the transformation or schedule a config describes.

    Args:
      config: a mapping with a ``"name"`` key naming a registered class (as
        written by :func:`to_config`, or by hand, leaving out arguments that
        keep their default).
      overrides: ``"path=value"`` strings applied first, in order, e.g.
        ``"learning_rate=3e-4"`` or ``"transforms.0.b2=0.95"`` (``transforms[0]``
        works too). The path must name a field of the class at that place, set
        or not. Values are read as JSON (numbers, ``true``/``false``, ``null``,
        lists, objects) and otherwise as strings; ``True``, ``None`` and
        ``inf`` are accepted too.

    Returns:
      The transformation or schedule, equal to the one the config came from.

    Raises:
      ConfigError: naming the path: an unknown name (listing the closest known
        names), an unknown or missing field (listing the valid ones), a value
        of the wrong type or out of range (e.g. ``transforms[1].b2: must be in
        [0, 1), got 1.5``), an override that names no field, or data past
        the limits (:data:`MAX_DEPTH`, :data:`MAX_VALUES`,
        :data:`MAX_OVERRIDE_LENGTH`). Nothing else, whatever the data.

    Example:
      >>> import gradtx
      >>> gradtx.from_config({"name": "adam", "learning_rate": 1e-3}, ["b2=0.95"])
      adam(learning_rate=0.001, b1=0.9, b2=0.95, eps=1e-08)
    """
    if not isinstance(config, Mapping):
        raise error_at((), f"expected a mapping with a 'name' key, got {capped_repr(config)}")
    if overrides:
        config = apply_overrides(config, overrides)  # checks the limits before and after
    else:
        check_limits(config)
    return _decode_value(config, ())


def _decode(value: Any, path: Path) -> Any:
    if isinstance(value, Mapping):
        if "name" in value:
            return _decode_value(value, path)
        if set(value) == ARRAY_KEYS:
            return decode_array(value, path)
        for key in value:
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise error_at(
                    path,
                    "keys must be strings (or integers, as schedule boundaries), got "
                    f"{capped_repr(key)} ({type(key).__name__})",
                )
        return {key: _decode(item, path + (_path_part(key),)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_decode(item, path + (position,)) for position, item in enumerate(value))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise error_at(
        path,
        "a config holds only mappings, lists, numbers, booleans, strings and null, "
        f"got {type(value).__name__} {capped_repr(value)}",
    )


def _path_part(key: str | int) -> str:
    return key if isinstance(key, str) else capped_repr(key)  # str() fails past 4300 digits


def _decode_value(config: Mapping[str, Any], path: Path) -> Value:
    name = config.get("name")
    if not isinstance(name, str):
        raise error_at(
            path, f"'name' must be a string naming a registered class, got {capped_repr(name)}"
        )
    cls = registry.lookup(name)
    if cls is None:
        raise error_at(path, unknown_name_message(name))
    fields = {field.name: field for field in registry.config_fields(cls)}
    for key in config:
        if not isinstance(key, str):
            raise error_at(path, f"field names must be strings, got {capped_repr(key)}")
        if key != "name" and key not in fields:
            raise error_at(path, unknown_field_message(name, key, fields))
    missing = [
        field.name for field in fields.values() if field.name not in config and _is_required(field)
    ]
    if missing:
        raise error_at(path, f"{name} needs {', '.join(repr(m) for m in missing)}")
    arguments = {}
    for key, raw in config.items():
        if key != "name":
            arguments[key] = _decode(raw, path + (key,))
            _check_simple_type(fields[key], arguments[key], path + (key,))
    try:
        # By keyword, as dataclasses.replace does: chain takes transforms=... too.
        return cls(**arguments)
    except (TypeError, ValueError, ArithmeticError) as error:  # OverflowError for 10**400
        raise _located(error, name, path, fields) from error


def _is_required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _check_simple_type(field: dataclasses.Field, value: Any, path: Path) -> None:
    """Checks what a class cannot check itself: structural options (``if nesterov:``), and
    ``null`` for a number (in Python, None marks an unbatched field of a ``jax.vmap``
    ``in_axes`` spec, so constructors accept it; a config has no such use)."""
    if value is None and not none_allowed(field):
        raise error_at(path, "must be a number, got null")
    annotation = _annotation_text(field.type)
    if annotation == "bool" and not isinstance(value, bool):
        raise error_at(path, f"must be true or false, got {capped_repr(value)}")
    if annotation.startswith("tuple[") and not isinstance(value, tuple):
        raise error_at(path, f"must be a list, got {capped_repr(value)}")
    if annotation in ("str", "str | None") and not (
        isinstance(value, str) or (value is None and annotation == "str | None")
    ):
        or_null = " or null" if "None" in annotation else ""
        raise error_at(path, f"must be a string{or_null}, got {capped_repr(value)}")


def _annotation_text(annotation: Any) -> str:
    """A field's annotation as source text (``"str | None"``), whether given as text or as a type.

    A user's class written with ``from __future__ import annotations`` has text
    annotations; gradtx's own are real types.
    """
    if isinstance(annotation, str):
        return annotation
    if typing.get_origin(annotation) is tuple:
        return "tuple[...]"
    arguments = typing.get_args(annotation)
    if arguments and set(arguments) == {str, type(None)}:
        return "str | None"
    return getattr(annotation, "__name__", "")


_LEADING_NAME = re.compile(r"([A-Za-z_]\w*)((?:\[[^\]]*\])*) (.*)", re.DOTALL)


def _located(error: Exception, name: str, path: Path, fields: Mapping[str, Any]) -> ConfigError:
    """The error a class raised, moved to the path of the field it names.

    ``"b2 must be in [0, 1), got 1.5"`` raised at ``transforms[1]`` becomes
    ``"transforms[1].b2: must be in [0, 1), got 1.5"``.
    """
    # One line (an array's repr spans several), and short whatever value it quotes.
    message = capped(re.sub(r" *\n\s*", " ", str(error)), _CLASS_MESSAGE_LIMIT)
    match = _LEADING_NAME.fullmatch(message)
    if match and match.group(1) in fields:
        location = capped(format_path(path + (match.group(1),)) + match.group(2))
        return ConfigError(f"{location}: {match.group(3)}", path=location)
    return error_at(path, f"{name}: {message}")


def unknown_name_message(name: str) -> str:
    """The message for a name no class is registered under, with the closest names.

    Args:
      name: the unknown name.

    Returns:
      A message listing the closest registered names (or all of them).
    """
    known = registry.names()
    closest = _close_matches(name, known, 3)
    if closest:
        return f"unknown name {capped_repr(name)}; closest known names: {', '.join(closest)}"
    return (
        f"unknown name {capped_repr(name)}; known names: {', '.join(known)} (register your own "
        "class with @gradtx.register)"
    )


def unknown_field_message(name: str, key: str, fields: Mapping[str, Any]) -> str:
    """The message for a field ``name`` does not have, listing the valid ones.

    Args:
      name: the registered name of the class.
      key: the unknown field.
      fields: the class's valid fields.

    Returns:
      The message.
    """
    closest = _close_matches(key, list(fields), 1)
    suggestion = f" (did you mean {closest[0]!r}?)" if closest else ""
    valid = ", ".join(fields) or "none"
    return f"unknown field {capped_repr(key)} for {name}{suggestion}; valid fields: {valid}"


def _close_matches(word: str, possibilities: Sequence[str], count: int) -> list[str]:
    if len(word) > _CLOSE_MATCH_LIMIT:
        return []
    return difflib.get_close_matches(word, possibilities, n=count, cutoff=0.6)


def apply_overrides(config: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``config`` with ``"path=value"`` overrides applied in order.

    Args:
      config: a config mapping; it is not modified.
      overrides: strings such as ``"learning_rate=3e-4"``,
        ``"transforms.0.b2=0.95"`` or ``"transforms[0].b2=0.95"``.

    Returns:
      The new config.

    Raises:
      ConfigError: if an override is not a ``path=value`` string of at most
        :data:`MAX_OVERRIDE_LENGTH` characters, its path names no field of
        the class at that place (listing the valid fields), or the config
        before or after is past the limits of :func:`check_limits`.
      TypeError: if ``overrides`` is a single string rather than a list.
    """
    if isinstance(overrides, str):
        raise TypeError(
            f"overrides must be a list of 'path=value' strings, got {capped_repr(overrides)}"
        )
    check_limits(config)  # before deepcopy, which recurses
    result = copy.deepcopy(dict(config))
    for override in overrides:
        if not isinstance(override, str):
            raise error_at(
                (), f"an override must be a 'path=value' string, got {capped_repr(override)}"
            )
        if len(override) > MAX_OVERRIDE_LENGTH:
            raise error_at(
                (),
                f"override {capped_repr(override)} has {len(override):,} characters; "
                f"the limit is {MAX_OVERRIDE_LENGTH:,}",
            )
        path_text, equals, value_text = override.partition("=")
        parts = re.sub(r"\[(\d+)\]", r".\1", path_text.strip()).split(".")
        if not equals or not all(parts):
            raise error_at(
                (),
                f"override {capped_repr(override)} must look like path=value, "
                "e.g. learning_rate=3e-4",
            )
        _set(result, parts, parse_value(value_text.strip()), capped_repr(override))
    check_limits(result)
    return result


def _set(config: dict[str, Any], parts: list[str], value: Any, override: str) -> None:
    """Sets ``value`` at ``parts``; ``override`` is the override, quoted for messages."""
    node: Any = config
    path: Path = ()
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        if isinstance(node, list):
            index = _index(part)
            if index is None or index >= len(node):
                raise error_at(
                    path,
                    f"override {override}: no entry {capped_repr(part)} in this list of "
                    f"{len(node)} (indices 0 to {len(node) - 1})",
                )
            key: Any = index
        elif isinstance(node, dict):
            key = _dict_key(node, part, path, override, last)
        else:
            raise error_at(
                path, f"override {override}: this is {capped_repr(node)}, not a config with fields"
            )
        if last:
            node[key] = value
        else:
            node = node[key]
            path += (key,)


def _dict_key(node: dict[str, Any], part: str, path: Path, override: str, last: bool) -> Any:
    if part in node:
        return part
    index = _index(part)
    if index is not None and index in node:
        return index  # a YAML mapping with integer keys (piecewise boundaries)
    name = node.get("name")
    cls = registry.lookup(name) if isinstance(name, str) else None
    if cls is None:
        raise error_at(
            path,
            f"override {override}: no field {capped_repr(part)} here; the fields are "
            f"{capped(', '.join(map(_path_part, node))) or 'none'}",
        )
    fields = {field.name: field for field in registry.config_fields(cls)}
    if part not in fields:
        problem = unknown_field_message(node["name"], part, fields)
        raise error_at(path, f"override {override}: {problem}")
    if not last:
        raise error_at(
            path + (part,),
            f"override {override}: {capped_repr(part)} is not set in the config; set it whole, "
            f'e.g. {part}={{"name": ...}}',
        )
    return part


def _index(part: str) -> int | None:
    """``part`` as a list index, if it is one (``int()`` refuses over 4300 digits)."""
    if part.isascii() and part.isdigit() and len(part) <= 18:
        return int(part)
    return None


def parse_value(text: str) -> Any:
    """Reads an override's value: JSON, else true/false/null in any case, else a string.

    Args:
      text: e.g. ``"3e-4"``, ``"0.95"``, ``"true"``, ``"null"``, ``"[1, 2]"``,
        ``'{"name": "constant_schedule", "value": 0.1}'``, ``"bfloat16"``.

    Returns:
      The number, boolean, None, list, dict or string.

    Raises:
      ConfigError: if the JSON nests too deep for the parser (thousands of levels).
    """
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    try:
        return json.loads(text)
    except RecursionError:
        raise error_at((), f"the value {capped_repr(text)} nests too deep") from None
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
