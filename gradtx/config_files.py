"""Config files: :func:`save_config` and :func:`load_config` for JSON and YAML.

YAML is read by a subclass of ``yaml.SafeLoader``: tags such as
``!!python/object`` are rejected, so reading a file never builds arbitrary
Python objects. The one difference from ``yaml.safe_load`` is that ``1e-3``
reads as a float (YAML 1.2, as in JSON); plain PyYAML reads it as a string.
Duplicate keys are an error rather than the last one silently winning.
"""

import json
import os
import re
from collections.abc import Sequence
from typing import Any

import yaml

from gradtx.base import Value
from gradtx.config import ConfigError, from_config, to_config

_SUFFIXES = (".json", ".yaml", ".yml")


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e-3`` as a float and refuses duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _ConfigDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes strings :class:`_ConfigLoader` would read as floats."""


# YAML 1.2 floats such as 1e-3 (YAML 1.1 needs a dot: 1.0e-3). The dumper gets
# the same rule so that a string like "1e-3" is written quoted.
for _yaml_class in (_ConfigLoader, _ConfigDumper):
    _yaml_class.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )


def _suffix(path: str | os.PathLike[str]) -> str:
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in _SUFFIXES:
        raise ValueError(
            f"{os.fspath(path)}: unsupported config file type {suffix or '(none)'!r}; "
            f"use one of {', '.join(_SUFFIXES)}"
        )
    return suffix


def save_config(tx: Value, path: str | os.PathLike[str]) -> None:
    """Writes ``to_config(tx)`` to a ``.json``, ``.yaml`` or ``.yml`` file.

    Args:
      tx: a gradtx transformation, alias, chain or schedule.
      path: the file to write; its suffix picks the format.

    Returns:
      None; the file holds ``to_config(tx)``.

    Raises:
      ValueError: if the suffix is not one of the supported ones.
      ConfigError: if ``tx`` holds something a config cannot name (see
        :func:`gradtx.to_config`).

    Example:
      >>> import gradtx, pathlib, tempfile
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "optimizer.yaml"
      >>> tx = gradtx.adamw(gradtx.exponential_decay(1e-3, 1000, 0.9), weight_decay=0.05)
      >>> gradtx.save_config(tx, path)
      >>> gradtx.load_config(path) == tx
      True
    """
    suffix = _suffix(path)
    config = to_config(tx)
    if suffix == ".json":
        text = json.dumps(config, indent=2) + "\n"
    else:
        text = yaml.dump(config, Dumper=_ConfigDumper, sort_keys=False, default_flow_style=False)
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads a config file as data, without building anything.

    Args:
      path: a ``.json``, ``.yaml`` or ``.yml`` file.

    Returns:
      The config mapping.

    Raises:
      ConfigError: if the file does not parse (naming the file, line and
        column) or does not hold a mapping.
      ValueError: if the suffix is not one of the supported ones.
      OSError: if the file cannot be read.
    """
    suffix = _suffix(path)
    with open(path, encoding="utf-8") as file:
        text = file.read()
    name = os.fspath(path)
    if suffix == ".json":
        try:
            config = json.loads(text, object_pairs_hook=_without_duplicates)
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"{name}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}"
            ) from None
        except _DuplicateKeyError as error:
            raise ConfigError(f"{name}: invalid JSON: {error}") from None
    else:
        try:
            config = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
            problem = " ".join(filter(None, (error.context, error.problem)))
            raise ConfigError(f"{where}: invalid YAML: {problem}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{name}: invalid YAML: {error}") from None
    if not isinstance(config, dict):
        raise ConfigError(
            f"{name}: expected a mapping with a 'name' key at the top level, "
            f"got {type(config).__name__}"
        )
    return config


class _DuplicateKeyError(ValueError):
    """A JSON object with the same key twice (``json`` keeps the last silently)."""


def _without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"found the key {key!r} twice in one object")
        result[key] = value
    return result


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Any:
    """Builds the transformation or schedule a ``.json``/``.yaml``/``.yml`` file describes.

    Args:
      path: the file, as written by :func:`save_config` or by hand.
      overrides: ``"path=value"`` strings applied before building, as in
        :func:`gradtx.from_config` (e.g. taken from the command line).

    Returns:
      The transformation or schedule.

    Raises:
      ConfigError: for a file that does not parse (with file, line and
        column) and for every :func:`gradtx.from_config` error, prefixed with
        the file name, e.g. ``adamw.yaml: transforms[1].b2: must be in [0, 1),
        got 1.5``.
      ValueError: if the suffix is not one of the supported ones.
      OSError: if the file cannot be read.

    Example:
      >>> import gradtx, pathlib, tempfile
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "optimizer.json"
      >>> gradtx.save_config(gradtx.adam(1e-3), path)
      >>> gradtx.load_config(path, overrides=["learning_rate=3e-4"])
      adam(learning_rate=0.0003, b1=0.9, b2=0.999, eps=1e-08)
    """
    config = read_config(path)
    try:
        return from_config(config, overrides)
    except ConfigError as error:
        raise ConfigError(f"{os.fspath(path)}: {error}", path=error.path) from error
