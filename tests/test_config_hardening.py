"""Bounds on reading and building configs: hostile files and data give a short ConfigError, fast.

Every test here feeds input a user (or an attacker) controls and checks that
the outcome is a one-line :class:`ConfigError` naming the place and the value
(cut short), never a hang, a huge allocation, a flood of text or another
exception from deep inside PyYAML, ``json`` or NumPy. The fuzz tests at the
end check the same promise on generated data.
"""

import copy
import dataclasses
import json
import math
import os
import re
import time

import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from config_examples import EXAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradtx
from gradtx import registry
from gradtx.checks import capped_repr
from gradtx.config import ConfigError
from gradtx.config_files import MAX_FILE_BYTES, _ConfigDumper, read_config
from gradtx.config_limits import MAX_DEPTH, MAX_OVERRIDE_LENGTH, MAX_VALUES, check_limits

SHORT = 300  # characters: the most an error about one value may take (200 of them the value)


def build_error(config, overrides=()):
    with pytest.raises(ConfigError) as info:
        gradtx.from_config(config, overrides)
    return info.value


def load_error(path):
    with pytest.raises(ConfigError) as info:
        gradtx.load_config(path)
    return info.value


def nested(depth, leaf=0.1, kind="list"):
    """``depth`` levels of lists (or dicts keyed "k") around ``leaf``, built without recursion."""
    node = leaf
    for _ in range(depth):
        node = [node] if kind == "list" else {"k": node}
    return node


def assert_one_short_line(error, limit=SHORT):
    message = str(error)
    assert "\n" not in message and len(message) <= limit, (len(message), message[:400])


# ---------------------------------------------------------------- YAML aliases


def billion_laughs(levels, inside_a_field):
    """Nine-fold aliases over ``levels`` anchors: 9**levels strings from a few hundred bytes."""
    anchors = ["&a0 [x,x,x,x,x,x,x,x,x]"]
    for level in range(1, levels):
        anchors.append(f"&a{level} [" + ",".join([f"*a{level - 1}"] * 9) + "]")
    if inside_a_field:
        return "name: adam\nlearning_rate: [" + ", ".join(anchors) + "]\n"
    lines = [f"k{level}: {anchor}" for level, anchor in enumerate(anchors)]
    return "name: adam\nlearning_rate: 0.001\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize("inside_a_field", [True, False])
def test_a_billion_laughs_file_is_refused_at_once(tmp_path, inside_a_field):
    # Before: 353 bytes took over 60 s and 0.9 GB, then a 1.9 MB message.
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs(8, inside_a_field))
    assert path.stat().st_size < 400
    start = time.perf_counter()
    error = load_error(path)
    assert time.perf_counter() - start < 2
    assert_one_short_line(error)
    line = 2 if inside_a_field else 3
    assert re.match(rf"{re.escape(str(path))}:{line}:\d+: YAML anchors and aliases", str(error))
    assert "not supported in gradtx configs" in str(error)


@pytest.mark.parametrize(
    "text, line",
    [
        ("name: adam\nlearning_rate: &lr 0.001\n", 2),  # an anchor alone is refused too
        ("defaults: &d {b1: 0.9}\nname: adam\n", 1),
        ("name: adam\n<<: {b1: 0.9}\nlearning_rate: 0.1\n", 2),  # a merge key
        ("--- &top\nname: adam\nlearning_rate: 0.1\n", 1),
    ],
)
def test_anchors_aliases_and_merge_keys_are_refused_with_their_line(tmp_path, text, line):
    path = tmp_path / "anchored.yaml"
    path.write_text(text)
    error = load_error(path)
    assert str(error).startswith(f"{path}:{line}:")
    assert "YAML anchors and aliases (&name / *name, and so << merge keys)" in str(error)


def test_the_dumper_never_writes_anchors(tmp_path):
    shared = {"name": "constant_schedule", "value": 0.1}
    text = yaml.dump({"a": shared, "b": shared, "c": [shared]}, Dumper=_ConfigDumper)
    assert "&" not in text and "*" not in text
    member = gradtx.scale_by_adam()
    tx = gradtx.chain(member, member, gradtx.scale_by_learning_rate(1e-3))
    path = tmp_path / "twice.yaml"
    gradtx.save_config(tx, path)
    assert "&" not in path.read_text() and "*" not in path.read_text()
    assert gradtx.load_config(path) == tx


# ---------------------------------------------------------------- nesting depth


def test_depth_limit_is_exact():
    check_limits(nested(MAX_DEPTH, kind="dict"))
    check_limits(nested(MAX_DEPTH - 1, kind="list", leaf={}))
    with pytest.raises(ConfigError, match=rf"nests deeper than {MAX_DEPTH} levels"):
        check_limits(nested(MAX_DEPTH + 1, kind="dict"))
    with pytest.raises(ConfigError, match=rf"nests deeper than {MAX_DEPTH} levels"):
        check_limits(nested(MAX_DEPTH, kind="list", leaf={}))


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_a_deep_python_config_is_refused_without_recursion(kind):
    # Before: RecursionError with 210 KB of traceback.
    error = build_error({"name": "adam", "learning_rate": nested(10_000, kind=kind)})
    assert_one_short_line(error)
    assert f"nests deeper than {MAX_DEPTH} levels of mappings and lists" in str(error)
    prefix = "learning_rate[0][0]" if kind == "list" else "learning_rate.k.k"
    assert str(error).startswith(prefix) and error.path.startswith(prefix)
    assert len(error.path) <= 200  # the path is cut short, not 10,000 parts long


def test_a_config_that_contains_itself_is_refused():
    config = {"name": "chain", "transforms": []}
    config["transforms"].append(config)
    assert "nests deeper than" in str(build_error(config))


def test_a_python_billion_laughs_is_refused_fast():
    # One list shared nine-fold over nine levels: 387 million values to walk.
    node = [0.1] * 9
    for _ in range(8):
        node = [node] * 9
    start = time.perf_counter()
    error = build_error({"name": "adam", "learning_rate": node})
    assert time.perf_counter() - start < 2
    assert f"the config holds more than {MAX_VALUES:,} values" in str(error)
    assert str(error).startswith("learning_rate")


@pytest.mark.parametrize(
    "suffix, text",
    [
        (".json", '{"name": "adam", "learning_rate": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        (".json", '{"name": "adam", "learning_rate": ' + "[" * 200 + "]" * 200 + "}"),
        (".yaml", "name: adam\nlearning_rate: " + "[" * 10_000 + "]" * 10_000 + "\n"),
        (".yaml", "name: adam\nx:\n" + "".join(" " * i + "- \n" for i in range(1, 200))),
    ],
    ids=["json-100000", "json-200", "yaml-flow-10000", "yaml-block-200"],
)
def test_a_deep_file_is_refused(tmp_path, suffix, text):
    # Before: RecursionError (JSON and YAML alike), 200 KB of traceback for YAML.
    path = tmp_path / f"deep{suffix}"
    path.write_text(text)
    error = load_error(path)
    assert_one_short_line(error, SHORT + len(str(path)))
    assert str(error).startswith(str(path))
    assert f"nests deeper than {MAX_DEPTH} levels" in str(error)
    assert error.__cause__ is None and error.__suppress_context__  # no chained RecursionError


def test_a_deep_yaml_file_names_the_line_and_column(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: adam\nlearning_rate: " + "[" * 100 + "]" * 100 + "\n")
    column = len("learning_rate: ") + MAX_DEPTH  # the top mapping is the first level
    assert str(load_error(path)).startswith(f"{path}:2:{column}: nests deeper than")


# ---------------------------------------------------------------- file size and bytes


def test_an_oversized_file_is_refused_before_reading(tmp_path):
    # Before: read whole (a 3 MB file of comments took 2.4 s and loaded).
    path = tmp_path / "big.yaml"
    path.write_text("name: sgd\nlearning_rate: 0.1\n" + "#" * (3 << 20) + "\n")
    error = load_error(path)
    size = path.stat().st_size
    assert str(error) == (
        f"{path}: a config file may have at most {MAX_FILE_BYTES:,} bytes (1 MiB), "
        f"this one has {size:,}"
    )


def test_a_file_of_exactly_the_limit_is_read(tmp_path):
    path = tmp_path / "padded.json"
    text = '{"name": "sgd", "learning_rate": 0.1}'
    path.write_text(text + " " * (MAX_FILE_BYTES - len(text)))
    assert path.stat().st_size == MAX_FILE_BYTES
    assert gradtx.load_config(path) == gradtx.sgd(0.1)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_a_fifo_or_a_directory_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    assert str(load_error(fifo)) == f"{fifo}: not a regular file"
    folder = tmp_path / "folder.json"
    folder.mkdir()
    assert str(load_error(folder)) == f"{folder}: not a regular file"


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path, suffix):
    # Before: UnicodeDecodeError.
    path = tmp_path / f"binary{suffix}"
    data = b'{"name": "adam", "learning_rate": 0.1, "x": "\xff"}'
    path.write_bytes(data)
    assert str(load_error(path)) == f"{path}: not UTF-8 text: byte {data.index(255)} is 0xff"


# ---------------------------------------------------------------- keys and scalars in files


MAPPING = ":2:1: invalid YAML: while reading a mapping"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: adam\n[1, 2]: 3\n", f"{MAPPING} a key must be a string, not a list or a mapping"),
        ("name: adam\n{a: 1}: 3\n", f"{MAPPING} a key must be a string, not a list or a mapping"),
        ("name: adam\nyes: 3\n", f"{MAPPING} the key 'yes' reads as bool, but a key must be"),
        ("name: adam\nnull: 3\n", f"{MAPPING} the key 'null' reads as NoneType"),
        ("name: adam\n1: 2\n", ": config: field names must be strings, got 1"),
        ("name: adam\nlearning_rate: " + "9" * 5000, ":2:16: invalid YAML: cannot read '99999"),
        ("name: adam\nlearning_rate: 2001-02-30\n", ":2:16: invalid YAML: cannot read '2001-"),
        ("name: adam\x00\n", ": invalid YAML: unacceptable character #x0000"),
        ("name: adam\nb1: !!bool maybe\n", ":2:5: invalid YAML: cannot read 'maybe'"),
        ("name: adam\nb1: !!timestamp x\n", ":2:5: invalid YAML: cannot read 'x'"),
        ("name: adam\nb1: !!set '~'\n", ":2:5: invalid YAML: expected a mapping node"),
    ],
    ids=["list-key", "map-key", "bool-key", "null-key", "int-key", "digits", "date", "nul",
         "bool-tag", "timestamp-tag", "set-tag"],
)  # fmt: skip
def test_yaml_keys_and_scalars_python_refuses_are_config_errors(tmp_path, text, expected):
    # Before: TypeError (unhashable, 'int' object is not iterable) or ValueError from int()/date().
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    error = load_error(path)
    assert str(error).startswith(f"{path}{expected}")
    assert_one_short_line(error, 400 + len(str(path)))


def test_a_json_integer_of_5000_digits_is_a_config_error(tmp_path):
    # Before: ValueError from int() ("Exceeds the limit (4300 digits)").
    path = tmp_path / "digits.json"
    path.write_text('{"name": "adam", "learning_rate": ' + "9" * 5000 + "}")
    error = load_error(path)
    assert str(error).startswith(f"{path}: invalid JSON: Exceeds the limit (4300 digits)")
    assert_one_short_line(error, SHORT + len(str(path)))


# ---------------------------------------------------------------- arrays


OUT_OF_RANGE = "is out of range for"
NOT_A_NUMBER = "must be a number for dtype float32, got"
KIND = "must be a numeric or boolean dtype, got"
NOT_A_NAME = "must name a dtype, such as 'float32', got"


@pytest.mark.parametrize(
    "array, dtype, expected",
    [
        (1000, "int8", f"array: 1000 {OUT_OF_RANGE} int8 (-128 to 127)"),
        ([1, -1], "uint8", f"array[1]: -1 {OUT_OF_RANGE} uint8 (0 to 255)"),
        (10**400, "float32", f"array: <an integer of 1329 bits> {OUT_OF_RANGE} float32 (largest"),
        ([[1e5]], "float16", f"array[0][0]: 100000.0 {OUT_OF_RANGE} float16 (largest 65504)"),
        (2.5, "int32", "array: must be an integer for dtype int32, got 2.5"),
        (True, "float32", f"array: {NOT_A_NUMBER} True"),
        (2, "bool", "array: must be true or false for dtype bool, got 2"),
        ("1.0", "float32", f"array: {NOT_A_NUMBER} '1.0'"),
        ({"a": 1.0}, "float32", f"array: {NOT_A_NUMBER} {{'a': 1.0}}"),
        (None, "float32", f"array: {NOT_A_NUMBER} None"),
        ([[1.0], [1.0, 2.0]], "float32", "array: must be rectangular: nested lists of equal"),
        ([1.0, [2.0]], "float32", "array: must be rectangular"),
        (1.0, None, f"dtype: {NOT_A_NAME} None"),
        (1.0, ["float32"], f"dtype: {NOT_A_NAME} ['float32']"),
        (1.0, "float33", "dtype: unknown dtype 'float33'"),
        (1.0, "i4,,f8", "dtype: unknown dtype 'i4,,f8'"),
        (1.0, "object", f"dtype: {KIND} 'object'"),
        (1.0, "str", f"dtype: {KIND} 'str'"),
        (1.0, "V8", f"dtype: {KIND} 'void64'"),
        (1.0, "datetime64", f"dtype: {KIND} 'datetime64'"),
        (1.0, "a", f"dtype: {KIND} 'bytes'"),
        (1.0, "i4,f8", f"dtype: {KIND} 'void96'"),
    ],
)
def test_bad_arrays_name_the_path_the_value_and_the_dtype(array, dtype, expected):
    # Before: OverflowError for 1000 as int8 and 10**400 as float32; "1.0" read as a number;
    # 2.5 truncated to 2 and 2 read as True silently.
    error = build_error({"name": "adam", "learning_rate": {"array": array, "dtype": dtype}})
    assert str(error).startswith(f"learning_rate.{expected}")
    assert_one_short_line(error)


def test_an_array_past_the_element_limit_is_refused():
    rows = [[0.5] * 1_001] * 1_000  # shared rows: little memory, a million elements
    error = build_error({"name": "scale", "step_size": {"array": rows, "dtype": "float32"}})
    assert f"more than {MAX_VALUES:,}" in str(error)
    assert str(error).startswith("step_size.array[")


@pytest.mark.parametrize(
    "value",
    [
        jnp.asarray(0.5, jnp.float8_e4m3fn),
        jnp.asarray(0.5, jnp.bfloat16),
        jnp.asarray(3, jnp.int4),
        np.asarray(0.5, ">f4"),
        np.asarray(65504.0, np.float16),
    ],
)
def test_arrays_of_every_numeric_dtype_read_back(value):
    config = json.loads(json.dumps(gradtx.to_config(gradtx.scale(value))))
    rebuilt = gradtx.from_config(config)
    assert np.asarray(rebuilt.step_size).dtype == np.dtype(value.dtype.name)
    np.testing.assert_array_equal(np.asarray(rebuilt.step_size), np.asarray(value))


# ---------------------------------------------------------------- message length


HUGE = "x" * 1_000_000


ADAM = {"name": "adam", "learning_rate": 0.1}
LONG = HUGE[:50_000]  # an override may have at most MAX_OVERRIDE_LENGTH characters
KNOWN_NAMES = len(", ".join(registry.names()))  # an unknown name's message lists them all


@pytest.mark.parametrize(
    "config, overrides, start",
    [
        ({"name": HUGE}, (), "config: unknown name 'xxx"),
        ({**ADAM, HUGE: 1}, (), "config: unknown field 'xxx"),
        ({**ADAM, "learning_rate": {HUGE: {"array": 1, "dtype": "?!"}}}, (), "learning_rate.xxx"),
        ({**ADAM, "learning_rate": {"array": HUGE, "dtype": "float32"}}, (), "learning_rate.array"),
        ({**ADAM, "learning_rate": {"array": 1, "dtype": HUGE}}, (), "learning_rate.dtype: unk"),
        ({**ADAM, "learning_rate": {1: 2, (HUGE,): 3}}, (), "learning_rate: keys must be"),
        (ADAM, [LONG + "=1"], "config: override 'xxx"),
        (ADAM, ["learning_rate." + LONG + "=1"], "learning_rate: override 'learning_rate.xxx"),
        (ADAM, ["x" * 70_000], "config: override 'xxx"),
        ({**ADAM, "nesterov": HUGE}, (), "nesterov: must be true or false, got 'xxx"),
        ({"name": "path_mask", "include": HUGE}, (), "include: must be a list, got 'xxx"),
        ({"name": "trace", "decay": 0.9, "accumulator_dtype": [HUGE]}, (), "accumulator_dtype"),
    ],
    ids=["name", "field", "key", "array", "dtype", "tuple-key", "override-path",
         "override-field", "override-length", "bool-field", "list-field", "str-field"],
)  # fmt: skip
def test_messages_quote_at_most_200_characters_of_a_value(config, overrides, start):
    # Before: each of these printed the whole megabyte.
    error = build_error(config, overrides)
    message = str(error)
    assert message.startswith(start)
    assert "x" * 201 not in message and len(error.path) <= 200
    assert_one_short_line(error, KNOWN_NAMES + SHORT if "unknown name" in start else 500)


@pytest.mark.parametrize(
    "config, overrides",
    [
        ({**ADAM, "learning_rate": HUGE}, ()),
        ({**ADAM, "learning_rate": [HUGE]}, ()),
        ({**ADAM, "learning_rate": {"k": HUGE}}, ()),
        ({**ADAM, "learning_rate": 10**5000}, ()),
        ({**ADAM, "learning_rate": [10**5000]}, ()),
        (ADAM, ["learning_rate=" + LONG]),
        (ADAM, [f'learning_rate={{"k": "{LONG}"}}']),
        ({"name": "scale", "step_size": {"array": [[True] * 50] * 50, "dtype": "bool"}}, ()),
    ],
    ids=["str", "list", "mapping", "huge-int", "huge-int-list", "override", "override-mapping",
         "array-repr-of-many-lines"],
)  # fmt: skip
def test_a_message_a_class_raises_about_a_huge_value_is_cut(config, overrides):
    # The class's own message quotes the value; the config layer cuts the whole
    # message to 500 characters (before: 1 MB, or ValueError for 10**5000).
    error = build_error(config, overrides)
    assert str(error).startswith(("learning_rate: ", "config: adam: ", "step_size: "))
    assert_one_short_line(error, 520)


def test_a_key_with_a_newline_keeps_the_message_on_one_line():
    error = build_error({"name": "adam", "learning_rate": {"a\nb": [nested(80)]}})
    assert str(error).startswith("learning_rate['a\\nb'][0]")
    assert "\n" not in str(error)


def test_capped_repr_is_safe_for_any_value():
    class Broken:
        def __repr__(self):
            raise RuntimeError("no repr")

    assert capped_repr(Broken()).startswith("<Broken")
    assert capped_repr(10**5000) == "<an integer of 16610 bits>"
    assert capped_repr([10**5000]) == "<list>"  # repr() refuses ints of over 4300 digits
    assert len(capped_repr(HUGE)) <= 200 and capped_repr("ab") == "'ab'"
    assert len(capped_repr({str(key): list(range(1000)) for key in range(1000)})) <= 200


# ---------------------------------------------------------------- keys and types in data


KEYS = "keys must be strings (or integers, as schedule boundaries), got"
NAME = "'name' must be a string naming a registered class, got"


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"name": "adam", 1: 2}, "config: field names must be strings, got 1"),
        ({"name": "adam", ("a",): 2}, "config: field names must be strings, got ('a',)"),
        ({"name": "adam", "learning_rate": {(1, 2): 3}}, f"learning_rate: {KEYS} (1, 2) (tuple)"),
        ({"name": "adam", "learning_rate": {None: 3}}, f"learning_rate: {KEYS} None (NoneType)"),
        ({"name": "adam", "learning_rate": {True: 3}}, f"learning_rate: {KEYS} True (bool)"),
        ({"name": ["adam"]}, f"config: {NAME} ['adam']"),
        ({"name": {"name": "adam"}}, f"config: {NAME} {{'name': 'adam'}}"),
        ({"name": "adam", "learning_rate": {"name": 3}}, f"learning_rate: {NAME} 3"),
    ],
)
def test_odd_keys_and_names_are_config_errors(config, expected):
    # Before: TypeError ('int' object is not iterable) for an integer field name.
    assert str(build_error(config)).startswith(expected)


def test_construction_errors_become_config_errors_naming_the_field():
    error = build_error({"name": "adam", "learning_rate": 1e-3, "b1": 1.5})
    assert str(error) == "b1: must be in [0, 1), got 1.5"
    assert error.path == "b1"
    error = build_error(
        {"name": "chain", "transforms": [{"name": "adam", "learning_rate": 10**400}]}
    )
    assert error.path.startswith("transforms[0]")
    assert "<an integer" in str(error) or "learning_rate" in str(error)
    assert_one_short_line(error, 600)


# ---------------------------------------------------------------- overrides


CHAIN = {
    "name": "chain",
    "transforms": [{"name": "scale_by_adam"}, {"name": "scale", "step_size": -0.1}],
}


def test_an_override_longer_than_the_limit_is_refused():
    override = "transforms.0.b2=" + "9" * MAX_OVERRIDE_LENGTH
    error = build_error(CHAIN, [override])
    assert str(error).startswith("config: override 'transforms.0.b2=999")
    assert f"has {len(override):,} characters; the limit is {MAX_OVERRIDE_LENGTH:,}" in str(error)
    assert_one_short_line(error)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("transforms.0.b2=" + "[" * 30_000 + "]" * 30_000, "config: the value '[[[[["),
        ("transforms.0.b2=" + "[" * 70 + "]" * 70, "transforms[0].b2[0][0]"),
        ("transforms." + "9" * 5000 + ".b2=1", "transforms: override 'transforms.999"),
        ("transforms.0." + "9" * 5000 + "=1", "transforms[0]: override 'transforms.0.999"),
        ("transforms.²=1", "transforms: override 'transforms.²=1': no entry '²' in this list of 2"),
    ],
)
def test_overrides_get_the_same_bounds(override, expected):
    # Before: RecursionError for the deep value, ValueError from int() for 5000 digits.
    error = build_error(CHAIN, [override])
    assert str(error).startswith(expected)
    assert_one_short_line(error, 500)  # the override and the field it names: 200 each


@pytest.mark.parametrize("override", [3, None, b"learning_rate=1"])
def test_an_override_that_is_not_a_string_is_a_config_error(override):
    # Before: AttributeError ('int' object has no attribute 'partition').
    error = build_error(CHAIN, [override])
    assert str(error) == f"config: an override must be a 'path=value' string, got {override!r}"


def test_apply_overrides_checks_the_config_before_copying_it():
    # copy.deepcopy recurses, so a deep config must be refused before it.
    with pytest.raises(ConfigError, match="nests deeper than"):
        gradtx.config.apply_overrides({"name": "adam", "x": nested(10_000)}, ["x=1"])


# ---------------------------------------------------------------- fuzzing

# The vocabulary the generators draw from: real names, fields and dtypes, so
# that generated configs reach the classes' constructors, not only the checks
# of the config layer.
NAMES = registry.names()
CLASSES = {name: registry.config_fields(registry.lookup(name)) for name in NAMES}
REQUIRED = {
    name: [f.name for f in fields if f.default is f.default_factory is dataclasses.MISSING]
    for name, fields in CLASSES.items()
}
FIELD_NAMES = sorted({field.name for fields in CLASSES.values() for field in fields})
WORDS = [*NAMES, *FIELD_NAMES, "array", "dtype", "name", "float32", "int8", "bool", ""]
DTYPES = [
    "float32",
    "bfloat16",
    "float16",
    "int8",
    "uint8",
    "int32",
    "bool",
    "complex64",
    "float8_e4m3fn",
    "object",
    "str",
    "V8",
    "datetime64",
    "a",
    "i4,f8",
    "float33",
]
EXAMPLE_CONFIGS = [gradtx.to_config(tx) for examples in EXAMPLES.values() for tx in examples]
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMIT_S = 2.0  # for one call on one small input, on a loaded CI machine

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 2, 10, 2**31, 2**63, 2**64, 10**400, -(10**30)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 0.9, 1.0, 1.5, 1e-3, -1e-3, 1e30, math.inf, -math.inf, math.nan]),
    st.sampled_from(WORDS),
    st.text(max_size=8),
)


def named(children):
    """A config naming a registered class: its required fields and some others."""

    def fields_of(name):
        optional = [f.name for f in CLASSES[name] if f.name not in REQUIRED[name]]
        return st.fixed_dictionaries(
            {"name": st.just(name), **{field: children for field in REQUIRED[name]}},
            optional={field: children for field in optional},
        )

    return st.sampled_from(NAMES).flatmap(fields_of)


def _containers(children):
    array = st.fixed_dictionaries({"array": children, "dtype": st.sampled_from(DTYPES)})
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(WORDS), children, max_size=4),
        named(children),
        array,
    )


json_like = st.recursive(scalars, _containers, max_leaves=12)
configs = st.one_of(named(json_like), json_like)


def assert_builds_or_config_error(config, overrides=()):
    start = time.perf_counter()
    try:
        gradtx.from_config(config, overrides)
    except ConfigError as error:
        assert len(str(error)) < 4000  # the longest: an unknown name lists every name
    elapsed = time.perf_counter() - start
    assert elapsed < LIMIT_S, (elapsed, capped_repr(config))


@FUZZ
@given(configs)
def test_fuzz_from_config_on_json_like_data(config):
    assert_builds_or_config_error(config)


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, path + (key,))
    elif isinstance(node, list):
        for position, child in enumerate(node):
            yield from _paths(child, path + (position,))


def _replaced(config, path, value):
    if not path:
        return value
    result = copy.deepcopy(config)
    node = result
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return result


@st.composite
def mutated_configs(draw):
    """A real config with one or two sub-values replaced (a name by another registered name)."""
    config = draw(st.sampled_from(EXAMPLE_CONFIGS))
    for _ in range(draw(st.integers(1, 2))):
        path = draw(st.sampled_from(list(_paths(config))[1:]))
        value = draw(st.sampled_from(NAMES) if path[-1] == "name" else json_like)
        config = _replaced(config, path, value)
    return config


@FUZZ
@given(mutated_configs())
def test_fuzz_from_config_on_mutated_real_configs(config):
    assert_builds_or_config_error(config)


@st.composite
def overrides_of(draw, config):
    """``path=value`` strings over the paths of ``config``, or arbitrary text."""
    paths = [".".join(map(str, path)) for path in list(_paths(config))[1:]]
    value = st.one_of(
        json_like.map(json.dumps), st.sampled_from(WORDS + DTYPES), st.text(max_size=20)
    )
    override = st.one_of(
        st.tuples(st.sampled_from(paths), value).map("=".join), st.text(max_size=30)
    )
    return draw(st.lists(override, max_size=3))


@FUZZ
@given(st.sampled_from(EXAMPLE_CONFIGS).flatmap(lambda c: st.tuples(st.just(c), overrides_of(c))))
def test_fuzz_overrides(config_and_overrides):
    assert_builds_or_config_error(*config_and_overrides)


YAML_TOKENS = [
    "name: adam\n",
    "learning_rate: ",
    "transforms:\n",
    "- ",
    "  ",
    "\n",
    "[",
    "]",
    "{",
    "}",
    ", ",
    ": ",
    "&a ",
    "*a",
    "<<: ",
    "? ",
    "!!python/object:os.system ",
    "!!binary ",
    "!!set ",
    "!!omap ",
    "!!bool ",
    "!!int ",
    "!!float ",
    "!!timestamp ",
    "!!str ",
    "'",
    '"',
    "#",
    "---\n",
    "...\n",
    "|\n",
    "1e-3",
    "0x1f",
    "2001-02-30",
    "yes",
    "null",
    "~",
    ".inf",
    "9" * 40,
    "\t",
    "%YAML 1.1\n",
    "\\",
]
JSON_TOKENS = [
    '{"name": "adam"',
    ', "learning_rate": ',
    "{",
    "}",
    "[",
    "]",
    ", ",
    ": ",
    '"',
    "NaN",
    "Infinity",
    "-",
    "1e999",
    "9" * 40,
    "null",
    "true",
    '"array"',
    '"dtype"',
    '"int8"',
    "\\u0000",
    "\\",
]


def file_texts(tokens):
    return st.one_of(
        st.text(max_size=60), st.lists(st.sampled_from(tokens), max_size=25).map("".join)
    )


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize(
    "suffix, contents",
    [
        (".yaml", file_texts(YAML_TOKENS)),
        (".json", file_texts(JSON_TOKENS)),
        (".yaml", st.binary(max_size=60)),
        (".json", st.binary(max_size=60)),
    ],
    ids=["yaml-text", "json-text", "yaml-bytes", "json-bytes"],
)
def test_fuzz_read_config_on_arbitrary_files(fuzz_dir, suffix, contents):
    path = fuzz_dir / f"fuzzed{suffix}"

    @FUZZ
    @given(contents)
    def check(content):
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        start = time.perf_counter()
        try:
            config = read_config(path)
        except ConfigError as error:
            assert "\n" not in str(error) and len(str(error)) < 1000, str(error)
        else:
            assert isinstance(config, dict)
            assert_builds_or_config_error(config)
        assert time.perf_counter() - start < LIMIT_S

    check()
