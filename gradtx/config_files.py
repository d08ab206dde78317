"""Config files: :func:`save_config` and :func:`load_config` for JSON and YAML.

YAML is read by a subclass of ``yaml.SafeLoader``: tags such as
``!!python/object`` are rejected, so reading a file never builds arbitrary
Python objects. The one difference from ``yaml.safe_load`` is that ``1e-3``
reads as a float (YAML 1.2, as in JSON); plain PyYAML reads it as a string.
Duplicate keys are an error rather than the last one silently winning.

A config is small, so reading one is bounded: a file may have at most
:data:`MAX_FILE_BYTES` bytes (1 MiB) of UTF-8 text, and holds the data of
:func:`gradtx.from_config`'s limits (:data:`gradtx.config_limits.MAX_DEPTH` levels,
:data:`gradtx.config_limits.MAX_VALUES` values). YAML anchors and aliases
(``&a`` / ``*a``, and so ``<<`` merge keys) are refused: they let a file of a
few hundred bytes expand to billions of values (the "billion laughs"), and
:func:`save_config` never writes them. A key must be a string (or an integer,
as schedule boundaries): ``yes:`` or ``null:`` is refused rather than read as
a boolean or None. Whatever a file holds, reading it returns or raises
:class:`gradtx.ConfigError` (or OSError if it cannot be read).
"""

import json
import os
import re
import stat
from collections.abc import Sequence
from typing import Any

import yaml

from gradtx.base import Value
from gradtx.checks import capped, capped_repr
from gradtx.config import from_config, to_config
from gradtx.config_limits import MAX_DEPTH, ConfigError, check_limits

MAX_FILE_BYTES = 1 << 20
"""The most bytes a config file may have (1 MiB; an optimizer's config has a few KB)."""
_SUFFIXES = (".json", ".yaml", ".yml")
_ALIAS_PROBLEM = (
    "YAML anchors and aliases (&name / *name, and so << merge keys) are not supported "
    "in gradtx configs; write the value out in full"
)


# What PyYAML's constructors let escape for a bad value, besides its own errors.
_CONSTRUCTION_ERRORS = (ValueError, TypeError, ArithmeticError, LookupError, AttributeError)


class _Unsupported(yaml.composer.ComposerError):
    """Valid YAML that a gradtx config does not allow (an alias, too deep)."""


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e-3`` as a float, refuses duplicate keys and aliases.

    It also bounds the nesting while composing, so a deep document is refused
    before the recursive composer can exhaust the stack.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Unsupported(None, None, _ALIAS_PROBLEM, event.start_mark)
        if not isinstance(event, yaml.CollectionStartEvent):
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise _Unsupported(
                None,
                None,
                f"nests deeper than {MAX_DEPTH} levels of mappings and lists",
                event.start_mark,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except _CONSTRUCTION_ERRORS as error:
            # A value Python refuses: an integer of over 4300 digits, a date
            # such as 2001-02-30, "!!bool maybe" (a KeyError in PyYAML).
            what = capped_repr(node.value) if isinstance(node, yaml.ScalarNode) else node.id
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {what}: {capped(str(error))}", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):  # "!!set x": SafeLoader's own error
            return super().construct_mapping(node, deep=deep)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            _check_key_node(key_node, node)
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"the key {capped_repr(key_node.value)} reads as "
                    f"{type(key).__name__}, but a key must be a string; quote it",
                    key_node.start_mark,
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {capped_repr(key)} twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_key_node(key_node: yaml.Node, node: yaml.MappingNode) -> None:
    if key_node.tag == "tag:yaml.org,2002:merge":
        raise _Unsupported(None, None, _ALIAS_PROBLEM, key_node.start_mark)
    if not isinstance(key_node, yaml.ScalarNode):
        raise yaml.constructor.ConstructorError(
            "while reading a mapping",
            node.start_mark,
            "a key must be a string, not a list or a mapping",
            key_node.start_mark,
        )


class _ConfigDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes strings :class:`_ConfigLoader` would read as floats.

    It never writes anchors and aliases (which the loader refuses): a value
    that appears twice is written out twice.
    """

    def ignore_aliases(self, data: Any) -> bool:
        return True


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
      ConfigError: if the file is not a regular file of at most
        :data:`MAX_FILE_BYTES` bytes of UTF-8 text, does not parse (naming
        the file, line and column), uses YAML aliases, does not hold a
        mapping, or holds more than :func:`gradtx.config_limits.check_limits` allows.
      ValueError: if the suffix is not one of the supported ones.
      OSError: if the file cannot be read.
    """
    suffix = _suffix(path)
    name = os.fspath(path)
    text = _read_text(path, name)
    config = _parse_json(text, name) if suffix == ".json" else _parse_yaml(text, name)
    if not isinstance(config, dict):
        raise ConfigError(
            f"{name}: expected a mapping with a 'name' key at the top level, "
            f"got {type(config).__name__}"
        )
    try:
        check_limits(config)
    except ConfigError as error:
        raise ConfigError(f"{name}: {error}", path=error.path) from None
    return config


def _read_text(path: str | os.PathLike[str], name: str) -> str:
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block, /dev/zero never ends
        raise ConfigError(f"{name}: not a regular file")
    too_big = (
        f"{name}: a config file may have at most {MAX_FILE_BYTES:,} bytes (1 MiB), this one has"
    )
    if info.st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{too_big} {info.st_size:,}")
    with open(path, "rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)  # the file may have grown since stat
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{too_big} more")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{name}: not UTF-8 text: byte {error.start} is {data[error.start]:#04x}"
        ) from None


def _parse_json(text: str, name: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_without_duplicates)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{name}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}"
        ) from None
    except RecursionError:  # json's parser recurses once per level
        raise ConfigError(
            f"{name}: nests deeper than {MAX_DEPTH} levels of mappings and lists"
        ) from None
    except ValueError as error:  # a duplicate key, or an integer of over 4300 digits
        raise ConfigError(f"{name}: invalid JSON: {capped(str(error))}") from None


def _parse_yaml(text: str, name: str) -> Any:
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        problem = capped(" ".join(filter(None, (error.context, error.problem))), 400)
        if isinstance(error, _Unsupported):
            raise ConfigError(f"{where}: {problem}") from None
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except (yaml.YAMLError, *_CONSTRUCTION_ERRORS) as error:
        # A ReaderError spans two lines; the others are raised by a tagged
        # collection (!!set, !!omap) whose items are read after its node.
        problem = " ".join(str(error).split())
        raise ConfigError(f"{name}: invalid YAML: {capped(problem, 400)}") from None


class _DuplicateKeyError(ValueError):
    """A JSON object with the same key twice (``json`` keeps the last silently)."""


def _without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"found the key {capped_repr(key)} twice in one object")
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
