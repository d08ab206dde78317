"""save_config / load_config: JSON and YAML files, safe loading, errors with file and line."""

import json

import pytest
from config_examples import EXAMPLES

import gradtx
from gradtx.config import ConfigError

SUFFIXES = [".json", ".yaml", ".yml"]
ALL_EXAMPLES = [example for examples in EXAMPLES.values() for example in examples]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_example_round_trips_through_a_file(tmp_path, suffix):
    for position, example in enumerate(ALL_EXAMPLES):
        path = tmp_path / f"optimizer_{position}{suffix}"
        gradtx.save_config(example, path)
        assert gradtx.load_config(path) == example, path.read_text()
        assert gradtx.load_config(str(path)) == example


def test_files_are_readable(tmp_path):
    tx = gradtx.adamw(gradtx.exponential_decay(1e-3, 1000, 0.9), weight_decay=0.05)
    gradtx.save_config(tx, tmp_path / "adamw.yaml")
    text = (tmp_path / "adamw.yaml").read_text()
    assert text.startswith("name: adamw\nlearning_rate:\n  name: exponential_decay\n")
    assert "weight_decay: 0.05\n" in text
    gradtx.save_config(tx, tmp_path / "adamw.json")
    assert json.loads((tmp_path / "adamw.json").read_text()) == gradtx.to_config(tx)


def test_yaml_reads_exponents_without_a_dot_as_floats(tmp_path):
    # Plain PyYAML reads 3e-4 as the string "3e-4" (YAML 1.1); a config must not.
    path = tmp_path / "adam.yaml"
    path.write_text("name: adam\nlearning_rate: 3e-4\neps: 1E-6\nb2: 0.95\n")
    assert gradtx.load_config(path) == gradtx.adam(3e-4, b2=0.95, eps=1e-6)


def test_load_config_applies_overrides(tmp_path):
    path = tmp_path / "sgd.yml"
    path.write_text("name: sgd\nlearning_rate: 0.1\nmomentum: 0.9\n")
    tx = gradtx.load_config(path, overrides=["learning_rate=0.01", "weight_decay=5e-4"])
    assert tx == gradtx.sgd(0.01, momentum=0.9, weight_decay=5e-4)


def test_yaml_python_tags_are_rejected(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: adam\nlearning_rate: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError) as info:
        gradtx.load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:2:")
    assert "invalid YAML" in message and "python/object/apply:os.system" in message


def test_malformed_json_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "name": "adam",\n  "learning_rate": 0.001,\n}\n')
    expected = r"broken\.json:4:1: invalid JSON: Expecting property name"
    with pytest.raises(ConfigError, match=expected):
        gradtx.load_config(path)


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: adamw\nlearning_rate: [0.001\nb1: 0.9\n")
    with pytest.raises(ConfigError) as info:
        gradtx.load_config(path)
    assert str(info.value).startswith(f"{path}:3:")
    assert "invalid YAML" in str(info.value)


@pytest.mark.parametrize(
    "name, text",
    [
        ("twice.yaml", "name: adam\nlearning_rate: 0.1\nlearning_rate: 0.2\n"),
        ("twice.json", '{"name": "adam", "learning_rate": 0.1, "learning_rate": 0.2}'),
    ],
)
def test_duplicate_keys_are_an_error(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"found the key 'learning_rate' twice"):
        gradtx.load_config(path)


@pytest.mark.parametrize("name, text", [("list.yaml", "- adam\n"), ("number.json", "3")])
def test_the_top_level_must_be_a_mapping(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"expected a mapping with a 'name' key at the top level"):
        gradtx.load_config(path)


def test_build_errors_name_the_file_and_the_config_path(tmp_path):
    path = tmp_path / "chain.yaml"
    path.write_text(
        "name: chain\ntransforms:\n  - name: trace\n    decay: 0.9\n"
        "  - name: scale_by_adam\n    b2: 1.5\n"
    )
    with pytest.raises(ConfigError) as info:
        gradtx.load_config(path)
    assert str(info.value) == f"{path}: transforms[1].b2: must be in [0, 1), got 1.5"
    assert info.value.path == "transforms[1].b2"


def test_unsupported_suffixes_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported config file type '\.toml'"):
        gradtx.save_config(gradtx.sgd(0.1), tmp_path / "sgd.toml")
    with pytest.raises(ValueError, match=r"unsupported config file type '\(none\)'"):
        gradtx.load_config(tmp_path / "sgd")


def test_an_unserializable_optimizer_writes_no_file(tmp_path):
    path = tmp_path / "adamw.json"
    with pytest.raises(ConfigError, match=r"^mask: .*path_mask"):
        gradtx.save_config(gradtx.adamw(1e-3, mask=lambda params: params), path)
    assert not path.exists()


def test_strings_that_look_like_numbers_stay_strings_in_yaml(tmp_path):
    path = tmp_path / "mask.yaml"
    mask = gradtx.path_mask(include=["1e-3", "2", "true", "null"])
    tx = gradtx.add_decayed_weights(0.1, mask=mask)
    gradtx.save_config(tx, path)
    assert gradtx.load_config(path) == tx
