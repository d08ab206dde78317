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
from gradtx.base import Value

Path = tuple[str | int, ...]

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
_ARRAY_KEYS = frozenset({"array", "dtype"})


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
        else:
            text += f".{part}" if text else part
    return text


def _error(path: Path, problem: str) -> ConfigError:
    location = format_path(path)
    return ConfigError(f"{location or 'config'}: {problem}", path=location)


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
        raise TypeError(f"to_config expects a gradtx transformation or schedule, got {tx!r}")
    return _encode_value(tx, ())


def _encode_value(obj: Value, path: Path) -> dict[str, Any]:
    cls = type(obj)
    name = registry.name_of(cls)
    if name is None:
        reason = registry.NOT_SERIALIZABLE.get(cls) or (
            f"{cls.__module__}.{cls.__qualname__} is not registered; decorate the "
            "class with @gradtx.register so a config can name it"
        )
        raise _error(path, f"cannot write {cls.__name__} to a config: {reason}")
    config: dict[str, Any] = {"name": name}
    for field in registry.config_fields(cls):
        config[field.name] = _encode(getattr(obj, field.name), path + (field.name,))
    return config


def _encode(value: Any, path: Path) -> Any:
    if isinstance(value, Value):
        return _encode_value(value, path)
    if isinstance(value, jax.core.Tracer):
        raise _error(path, "is a traced value; call to_config outside jax.jit/vmap/grad")
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
        raise _error(path, f"cannot write the Python callable {value!r} to a config; {hint}")
    raise _error(path, f"cannot write a {type(value).__name__} ({value!r}) to a config")


def _encode_mapping(mapping: Mapping[Any, Any], path: Path) -> dict[str, Any]:
    """A mapping of values (partition's transforms by label) as a JSON object."""
    for key in mapping:
        if not isinstance(key, str):
            raise _error(path, f"can be written to a config only with string keys, got {key!r}")
    if "name" in mapping or set(mapping) == _ARRAY_KEYS:
        raise _error(
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
        raise _error(
            where,
            f"a mask tree can be written only as nested dicts of booleans, got "
            f"{type(node).__name__}; use gradtx.path_mask(include=..., exclude=...) instead",
        )

    if isinstance(tree, dict) and ("name" in tree or set(tree) == _ARRAY_KEYS):
        raise _error(
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
        [0, 1), got 1.5``), or an override that names no field.

    Example:
      >>> import gradtx
      >>> gradtx.from_config({"name": "adam", "learning_rate": 1e-3}, ["b2=0.95"])
      adam(learning_rate=0.001, b1=0.9, b2=0.95, eps=1e-08)
    """
    if not isinstance(config, Mapping):
        raise _error((), f"expected a mapping with a 'name' key, got {config!r}")
    if overrides:
        config = apply_overrides(config, overrides)
    return _decode_value(config, ())


def _decode(value: Any, path: Path) -> Any:
    if isinstance(value, Mapping):
        if "name" in value:
            return _decode_value(value, path)
        if set(value) == _ARRAY_KEYS:
            return _decode_array(value, path)
        return {key: _decode(item, path + (str(key),)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_decode(item, path + (position,)) for position, item in enumerate(value))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise _error(
        path,
        "a config holds only mappings, lists, numbers, booleans, strings and null, "
        f"got {type(value).__name__} {value!r}",
    )


def _decode_array(value: Mapping[str, Any], path: Path) -> np.ndarray:
    try:
        if not isinstance(value["dtype"], str):
            raise TypeError
        dtype = np.dtype(value["dtype"])
    except TypeError as error:
        raise _error(path + ("dtype",), f"unknown dtype {value['dtype']!r}") from error
    if dtype.kind not in "biufc" and dtype.name != "bfloat16":
        raise _error(path + ("dtype",), f"must be a numeric or boolean dtype, got {dtype.name!r}")
    try:
        return np.asarray(value["array"], dtype=dtype)
    except (TypeError, ValueError) as error:
        raise _error(path + ("array",), f"is not an array of {dtype.name}: {error}") from error


def _decode_value(config: Mapping[str, Any], path: Path) -> Value:
    name = config.get("name")
    if not isinstance(name, str):
        raise _error(path, f"'name' must be a string naming a registered class, got {name!r}")
    cls = registry.lookup(name)
    if cls is None:
        raise _error(path, unknown_name_message(name))
    fields = {field.name: field for field in registry.config_fields(cls)}
    for key in config:
        if key != "name" and key not in fields:
            raise _error(path, unknown_field_message(name, key, fields))
    missing = [
        field.name for field in fields.values() if field.name not in config and _is_required(field)
    ]
    if missing:
        raise _error(path, f"{name} needs {', '.join(repr(m) for m in missing)}")
    arguments = {}
    for key, raw in config.items():
        if key != "name":
            arguments[key] = _decode(raw, path + (key,))
            _check_simple_type(fields[key], arguments[key], path + (key,))
    try:
        # By keyword, as dataclasses.replace does: chain takes transforms=... too.
        return cls(**arguments)
    except (TypeError, ValueError) as error:
        raise _located(error, name, path, fields) from error


def _is_required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _check_simple_type(field: dataclasses.Field, value: Any, path: Path) -> None:
    """Checks the structural options a class cannot check itself (``if nesterov:``)."""
    annotation = _annotation_text(field.type)
    if annotation == "bool" and not isinstance(value, bool):
        raise _error(path, f"must be true or false, got {value!r}")
    if annotation.startswith("tuple[") and not isinstance(value, tuple):
        raise _error(path, f"must be a list, got {value!r}")
    if annotation in ("str", "str | None") and not (
        isinstance(value, str) or (value is None and annotation == "str | None")
    ):
        or_null = " or null" if "None" in annotation else ""
        raise _error(path, f"must be a string{or_null}, got {value!r}")


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
    message = str(error)
    match = _LEADING_NAME.fullmatch(message)
    if match and match.group(1) in fields:
        location = format_path(path + (match.group(1),)) + match.group(2)
        return ConfigError(f"{location}: {match.group(3)}", path=location)
    return _error(path, f"{name}: {message}")


def unknown_name_message(name: str) -> str:
    """The message for a name no class is registered under, with the closest names.

    Args:
      name: the unknown name.

    Returns:
      A message listing the closest registered names (or all of them).
    """
    known = registry.names()
    closest = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if closest:
        return f"unknown name {name!r}; closest known names: {', '.join(closest)}"
    return (
        f"unknown name {name!r}; known names: {', '.join(known)} (register your own "
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
    closest = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
    suggestion = f" (did you mean {closest[0]!r}?)" if closest else ""
    valid = ", ".join(fields) or "none"
    return f"unknown field {key!r} for {name}{suggestion}; valid fields: {valid}"


def apply_overrides(config: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``config`` with ``"path=value"`` overrides applied in order.

    Args:
      config: a config mapping; it is not modified.
      overrides: strings such as ``"learning_rate=3e-4"``,
        ``"transforms.0.b2=0.95"`` or ``"transforms[0].b2=0.95"``.

    Returns:
      The new config.

    Raises:
      ConfigError: if an override is not ``path=value`` or its path names no
        field of the class at that place (listing the valid fields).
    """
    result = copy.deepcopy(dict(config))
    if isinstance(overrides, str):
        raise TypeError(f"overrides must be a list of 'path=value' strings, got {overrides!r}")
    for override in overrides:
        path_text, equals, value_text = override.partition("=")
        parts = re.sub(r"\[(\d+)\]", r".\1", path_text.strip()).split(".")
        if not equals or not all(parts):
            raise _error(
                (), f"override {override!r} must look like path=value, e.g. learning_rate=3e-4"
            )
        _set(result, parts, parse_value(value_text.strip()), override)
    return result


def _set(config: dict[str, Any], parts: list[str], value: Any, override: str) -> None:
    node: Any = config
    path: Path = ()
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise _error(
                    path,
                    f"override {override!r}: no entry {part!r} in this list of "
                    f"{len(node)} (indices 0 to {len(node) - 1})",
                )
            key: Any = int(part)
        elif isinstance(node, dict):
            key = _dict_key(node, part, path, override, last)
        else:
            raise _error(path, f"override {override!r}: this is {node!r}, not a config with fields")
        if last:
            node[key] = value
        else:
            node = node[key]
            path += (key,)


def _dict_key(node: dict[str, Any], part: str, path: Path, override: str, last: bool) -> Any:
    if part in node:
        return part
    if part.isdigit() and int(part) in node:
        return int(part)  # a YAML mapping with integer keys (piecewise boundaries)
    name = node.get("name")
    cls = registry.lookup(name) if isinstance(name, str) else None
    if cls is None:
        raise _error(
            path,
            f"override {override!r}: no field {part!r} here; the fields are "
            f"{', '.join(map(str, node)) or 'none'}",
        )
    fields = {field.name: field for field in registry.config_fields(cls)}
    if part not in fields:
        problem = unknown_field_message(node["name"], part, fields)
        raise _error(path, f"override {override!r}: {problem}")
    if not last:
        raise _error(
            path + (part,),
            f"override {override!r}: {part!r} is not set in the config; set it whole, "
            f'e.g. {part}={{"name": ...}}',
        )
    return part


def parse_value(text: str) -> Any:
    """Reads an override's value: JSON, else true/false/null in any case, else a string.

    Args:
      text: e.g. ``"3e-4"``, ``"0.95"``, ``"true"``, ``"null"``, ``"[1, 2]"``,
        ``'{"name": "constant_schedule", "value": 0.1}'``, ``"bfloat16"``.

    Returns:
      The number, boolean, None, list, dict or string.
    """
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
