"""to_config / from_config: round trips over every registered name, overrides, errors."""

import dataclasses
import inspect
import json
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from config_examples import DECAY, EXAMPLES

import gradtx
from gradtx import registry
from gradtx.config import ConfigError

# Collected at import, before any test or doctest registers a class of its own.
REGISTERED = registry.names()


def as_json(config):
    """The config as it comes back from a JSON file."""
    return json.loads(json.dumps(config, allow_nan=False))


def error_message(config, overrides=()):
    with pytest.raises(ConfigError) as info:
        gradtx.from_config(config, overrides)
    return str(info.value)


def test_every_registered_name_has_an_example():
    missing = sorted(set(REGISTERED) - set(EXAMPLES))
    assert not missing, f"add round-trip examples for {missing} to EXAMPLES in {__file__}"
    assert not set(EXAMPLES) - set(REGISTERED), "EXAMPLES names something not registered"


@pytest.mark.parametrize("name", REGISTERED)
def test_round_trip(name):
    for example in EXAMPLES.get(name, ()):
        config = gradtx.to_config(example)
        assert config["name"] == name
        assert as_json(config) == config, "to_config must return plain JSON data"
        rebuilt = gradtx.from_config(as_json(config))
        assert type(rebuilt) is type(example)
        assert rebuilt == example
        assert hash(rebuilt) == hash(example)
        assert repr(rebuilt) == repr(example)
        assert gradtx.to_config(rebuilt) == config


def test_every_exported_value_class_is_registered_or_refused():
    for name in gradtx.__all__:
        obj = getattr(gradtx, name)
        if inspect.isclass(obj) and issubclass(obj, gradtx.Value) and dataclasses.is_dataclass(obj):
            assert registry.name_of(obj) == name or obj in registry.NOT_SERIALIZABLE, (
                f"gradtx.{name} is neither registered (add its module to "
                "registry._BUILTIN_MODULES) nor listed in registry.NOT_SERIALIZABLE"
            )


def test_an_alias_keeps_its_name_and_arguments():
    config = gradtx.to_config(gradtx.adamw(DECAY, weight_decay=0.05))
    assert config["name"] == "adamw"
    assert "transforms" not in config
    assert config["weight_decay"] == 0.05
    assert config["learning_rate"] == gradtx.to_config(DECAY)
    assert config["learning_rate"]["name"] == "exponential_decay"


def test_every_argument_is_written_defaults_included():
    config = gradtx.to_config(gradtx.adam(1e-3))
    assert config == {
        "name": "adam",
        "learning_rate": 1e-3,
        "b1": 0.9,
        "b2": 0.999,
        "eps": 1e-8,
        "eps_root": 0.0,
        "mu_dtype": None,
        "nesterov": False,
    }


def test_a_hand_written_config_may_leave_out_defaults():
    tx = gradtx.from_config({"name": "adamw", "learning_rate": 1e-3, "weight_decay": 0.1})
    assert tx == gradtx.adamw(1e-3, weight_decay=0.1)


def test_chain_is_a_list_of_member_configs():
    tx = gradtx.chain(gradtx.trace(0.9), gradtx.scale_by_learning_rate(0.1))
    config = gradtx.to_config(tx)
    assert [member["name"] for member in config["transforms"]] == [
        "trace",
        "scale_by_learning_rate",
    ]


def test_tuples_round_trip_to_equal_tuples():
    schedule = gradtx.piecewise_constant_schedule(1.0, {20: 0.5, 10: 0.1})
    config = gradtx.to_config(schedule)
    assert config["boundaries_and_scales"] == [[10, 0.1], [20, 0.5]]
    rebuilt = gradtx.from_config(as_json(config))
    assert rebuilt.boundaries_and_scales == ((10, 0.1), (20, 0.5))
    # The mapping form works where keys can be integers (YAML, Python).
    by_hand = {
        "name": "piecewise_constant_schedule",
        "init_value": 1.0,
        "boundaries_and_scales": {10: 0.1, 20: 0.5},
    }
    assert gradtx.from_config(by_hand) == schedule


@pytest.mark.parametrize(
    "value",
    [jnp.float32(1e-3), np.float64(0.1), jnp.float16(0.5), jnp.array([1e-3, 1e-2]), np.int32(3)],
)
def test_arrays_keep_their_dtype_and_values(value):
    tx = gradtx.scale(value)
    config = gradtx.to_config(tx)
    assert config["step_size"]["dtype"] == np.asarray(value).dtype.name
    rebuilt = gradtx.from_config(as_json(config))
    assert rebuilt == tx
    assert np.asarray(rebuilt.step_size).dtype == np.asarray(value).dtype


def test_a_transformation_that_went_through_jit_round_trips():
    tx = jax.jit(lambda t: t)(gradtx.adam(1e-3, b1=0.8))
    assert isinstance(tx.b1, jax.Array)
    assert gradtx.from_config(as_json(gradtx.to_config(tx))) == tx


def test_a_boolean_mask_tree_round_trips():
    tx = gradtx.add_decayed_weights(0.1, mask={"dense": {"w": True, "b": False}})
    config = gradtx.to_config(tx)
    assert config["mask"] == {"dense": {"b": False, "w": True}}
    assert gradtx.from_config(as_json(config)) == tx


@pytest.mark.parametrize(
    "mask, problem",
    [
        ({"layers": [True, False]}, "nested dicts of booleans"),
        ({"name": True, "w": False}, "would read back as a config"),
    ],
)
def test_a_mask_tree_a_config_cannot_hold_is_refused(mask, problem):
    with pytest.raises(ConfigError, match=problem) as info:
        gradtx.to_config(gradtx.add_decayed_weights(0.1, mask=mask))
    assert "path_mask" in str(info.value)


# ---------------------------------------------------------------- to_config errors


def test_a_callable_mask_says_how_to_make_it_serializable():
    tx = gradtx.chain(gradtx.adamw(1e-3, mask=lambda params: jax.tree.map(lambda _: True, params)))
    with pytest.raises(ConfigError) as info:
        gradtx.to_config(tx)
    message = str(info.value)
    assert message.startswith("transforms[0].mask: cannot write the Python callable")
    assert "gradtx.path_mask(include=..., exclude=...)" in message


def test_a_callable_schedule_says_what_to_use_instead():
    tx = gradtx.sgd(lambda count: 0.1)
    with pytest.raises(ConfigError, match=r"^learning_rate: cannot write the Python callable"):
        gradtx.to_config(tx)
    with pytest.raises(ConfigError, match="@gradtx.register"):
        gradtx.to_config(tx)


def test_a_custom_schedule_is_refused_with_its_path():
    schedule = gradtx.join_schedules([lambda c: 1.0, gradtx.constant_schedule(0.1)], [10])
    with pytest.raises(ConfigError) as info:
        gradtx.to_config(gradtx.adam(schedule))
    message = str(info.value)
    assert message.startswith("learning_rate.schedules[0]: cannot write custom_schedule")
    assert "plain Python function" in message


def test_an_optax_piece_is_refused_with_its_path_and_a_fix():
    tx = gradtx.chain(gradtx.trace(0.9), optax.scale(-0.1))
    with pytest.raises(ConfigError) as info:
        gradtx.to_config(tx)
    message = str(info.value)
    assert message.startswith("transforms[1]: cannot write foreign")
    assert "@gradtx.register" in message and "gradtx transformation of the same name" in message


def test_an_unregistered_value_class_is_refused():
    @gradtx.base.value_class
    class unregistered(gradtx.Transformation):  # noqa: N801
        pass

    with pytest.raises(ConfigError, match=r"^config: cannot write unregistered .*@gradtx.register"):
        gradtx.to_config(unregistered())


def test_a_traced_hyperparameter_cannot_be_written():
    @jax.jit
    def write(tx):
        gradtx.to_config(tx)
        return 0

    with pytest.raises(ConfigError, match=r"^learning_rate: is a traced value"):
        write(gradtx.sgd(0.1))


def test_to_config_rejects_a_non_value():
    with pytest.raises(TypeError, match="gradtx transformation or schedule"):
        gradtx.to_config(optax.adam(1e-3))


# ---------------------------------------------------------------- from_config errors


def test_out_of_range_values_name_their_path():
    config = {
        "name": "chain",
        "transforms": [
            {"name": "trace", "decay": 0.9},
            {"name": "scale_by_adam", "b2": 1.5},
        ],
    }
    assert error_message(config) == "transforms[1].b2: must be in [0, 1), got 1.5"
    assert error_message({"name": "adamw", "learning_rate": 1e-3, "b2": 1.5}) == (
        "b2: must be in [0, 1), got 1.5"
    )


def test_errors_in_nested_schedules_name_the_full_path():
    config = {
        "name": "adamw",
        "learning_rate": {
            "name": "exponential_decay",
            "init_value": 1e-3,
            "transition_steps": 0,
            "decay_rate": 0.9,
        },
    }
    assert error_message(config) == "learning_rate.transition_steps: must be > 0, got 0"
    config = {
        "name": "adam",
        "learning_rate": {
            "name": "piecewise_constant_schedule",
            "init_value": 1.0,
            "boundaries_and_scales": [[10, -0.5]],
        },
    }
    assert error_message(config) == (
        "learning_rate.boundaries_and_scales[10]: must be >= 0, got -0.5"
    )


def test_unknown_name_lists_the_closest_known_names():
    message = error_message({"name": "chain", "transforms": [{"name": "scale_by_adma"}]})
    assert message.startswith("transforms[0]: unknown name 'scale_by_adma'; closest known names: ")
    assert "scale_by_adam" in message.split("closest known names:")[1]
    message = error_message({"name": "adamx", "learning_rate": 1e-3})
    assert re.fullmatch(r"config: unknown name 'adamx'; closest known names: [a-z_, ]+", message)
    assert {"adam", "adamax"} <= set(message.split(": ")[-1].split(", "))


def test_unknown_field_is_named_with_the_valid_fields():
    message = error_message({"name": "chain", "transforms": [{"name": "scale_by_adam", "b3": 0.9}]})
    assert message == (
        "transforms[0]: unknown field 'b3' for scale_by_adam; valid fields: "
        "b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov"
    )
    message = error_message({"name": "sgd", "learning_rte": 0.1})
    assert message.startswith(
        "config: unknown field 'learning_rte' for sgd (did you mean "
        "'learning_rate'?); valid fields: learning_rate, momentum"
    )


def test_a_missing_required_field_is_named():
    assert error_message({"name": "sgd"}) == "config: sgd needs 'learning_rate'"


@pytest.mark.parametrize(
    "config, expected",
    [
        (
            {"name": "adam", "learning_rate": "fast"},
            "learning_rate: must be a number or an array, got 'fast'",
        ),
        (
            {"name": "adam", "learning_rate": 1e-3, "nesterov": "no"},
            "nesterov: must be true or false, got 'no'",
        ),
        (
            {"name": "trace", "decay": 0.9, "accumulator_dtype": 16},
            "accumulator_dtype: must be a string or null, got 16",
        ),
        (
            {"name": "chain", "transforms": {"name": "identity"}},
            "transforms: must be a list, got identity()",
        ),
        ({"name": "path_mask", "exclude": "bias$"}, "exclude: must be a list, got 'bias$'"),
        (
            {"name": "adam", "learning_rate": {"array": [1.0], "dtype": "object"}},
            "learning_rate.dtype: must be a numeric or boolean dtype, got 'object'",
        ),
        (
            {"name": "adam", "learning_rate": {"array": [1.0], "dtype": "float33"}},
            "learning_rate.dtype: unknown dtype 'float33'",
        ),
        ({"name": 3}, "config: 'name' must be a string naming a registered class, got 3"),
        (
            {"learning_rate": 0.1},
            "config: 'name' must be a string naming a registered class, got None",
        ),
    ],
)
def test_wrong_types_name_their_path(config, expected):
    assert error_message(config).startswith(expected)


def test_from_config_rejects_non_mappings_and_python_objects():
    with pytest.raises(ConfigError, match="expected a mapping"):
        gradtx.from_config(["adam"])
    with pytest.raises(ConfigError, match=r"^learning_rate: a config holds only"):
        gradtx.from_config({"name": "adam", "learning_rate": DECAY})


def test_config_errors_are_value_errors_with_a_path():
    with pytest.raises(ValueError) as info:
        gradtx.from_config({"name": "adamw", "learning_rate": 1e-3, "b2": 1.5})
    assert isinstance(info.value, ConfigError)
    assert info.value.path == "b2"


# ---------------------------------------------------------------- security


@pytest.mark.parametrize(
    "name",
    [
        "os.system",
        "__import__",
        "builtins.eval",
        "subprocess.Popen",
        "gradtx.base.value_class",
        "Value",
        "Transformation",
        "foreign",
        "custom_schedule",
    ],
)
def test_only_registered_names_are_built(name):
    message = error_message({"name": name, "transformation": "rm -rf /", "function": "print"})
    assert message.startswith(f"config: unknown name {name!r}")


def test_from_config_never_imports_the_module_a_name_mentions(tmp_path, monkeypatch):
    (tmp_path / "gradtx_canary_module.py").write_text("raise RuntimeError('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ["gradtx_canary_module", "gradtx_canary_module.thing"]:
        assert error_message({"name": name}).startswith("config: unknown name")
    assert "gradtx_canary_module" not in sys.modules


def test_the_package_never_evaluates_imports_dynamically_or_unpickles():
    forbidden = re.compile(
        r"\beval\(|\bexec\(|importlib|__import__\(|\bimport pickle|"
        r"\bpickle\.|\bmarshal\.|yaml\.unsafe_load|FullLoader|UnsafeLoader|yaml\.Loader\b"
    )
    offenders = []
    for path in sorted(pathlib.Path(gradtx.__file__).parent.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if forbidden.search(line.split("#")[0]):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders


# ---------------------------------------------------------------- overrides


CHAIN = {
    "name": "chain",
    "transforms": [
        {"name": "scale_by_adam"},
        {"name": "scale_by_learning_rate", "learning_rate": 1e-3},
    ],
}


def test_overrides_set_fields_by_dotted_path():
    tx = gradtx.from_config({"name": "adamw", "learning_rate": 1e-3}, ["learning_rate=3e-4"])
    assert tx == gradtx.adamw(3e-4)
    tx = gradtx.from_config(CHAIN, ["transforms.0.b2=0.95", "transforms[1].learning_rate=0.01"])
    assert tx == gradtx.chain(gradtx.scale_by_adam(b2=0.95), gradtx.scale_by_learning_rate(0.01))


def test_overrides_leave_the_config_unchanged():
    before = json.dumps(CHAIN)
    gradtx.from_config(CHAIN, ["transforms.0.b2=0.95"])
    assert json.dumps(CHAIN) == before


@pytest.mark.parametrize(
    "text, value",
    [
        ("3e-4", 3e-4),
        ("10", 10),
        ("-2", -2),
        ("0.5", 0.5),
        ("true", True),
        ("False", False),
        ("null", None),
        ("None", None),
        ("inf", float("inf")),
        ("bfloat16", "bfloat16"),
        ('"true"', "true"),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("", ""),
    ],
)
def test_override_values_are_parsed(text, value):
    assert gradtx.config.parse_value(text) == value
    assert type(gradtx.config.parse_value(text)) is type(value)


def test_an_override_may_replace_a_schedule_or_the_optimizer():
    config = {"name": "adamw", "learning_rate": 1e-3, "weight_decay": 0.1}
    tx = gradtx.from_config(
        config,
        [
            'learning_rate={"name": "cosine_decay_schedule", "init_value": 0.01, '
            '"decay_steps": 100}',
            "learning_rate.alpha=0.1",
            "mu_dtype=bfloat16",
            "nesterov=true",
        ],
    )
    assert tx == gradtx.adamw(
        gradtx.cosine_decay_schedule(0.01, 100, alpha=0.1),
        weight_decay=0.1,
        mu_dtype="bfloat16",
        nesterov=True,
    )
    switched = gradtx.from_config({"name": "adam", "learning_rate": 1e-3}, ["name=nadam"])
    assert switched == gradtx.nadam(1e-3)


def test_an_override_may_set_a_field_the_config_leaves_to_its_default():
    tx = gradtx.from_config({"name": "sgd", "learning_rate": 0.1}, ["momentum=0.9"])
    assert tx == gradtx.sgd(0.1, momentum=0.9)


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "transforms.0.b3=0.95",
            "transforms[0]: override 'transforms.0.b3=0.95': unknown field 'b3' for scale_by_adam; "
            "valid fields: b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov",
        ),
        (
            "learning_rate=0.1",
            "config: override 'learning_rate=0.1': unknown field 'learning_rate' for chain; "
            "valid fields: transforms",
        ),
        (
            "transforms.2.b2=0.9",
            "transforms: override 'transforms.2.b2=0.9': no entry '2' in this list of 2 "
            "(indices 0 to 1)",
        ),
        (
            "transforms.1.learning_rate.init_value=1",
            "transforms[1].learning_rate: override 'transforms.1.learning_rate.init_value=1': "
            "this is 0.001, not a config with fields",
        ),
        (
            "transforms.0.b1.x=1",
            "transforms[0].b1: override 'transforms.0.b1.x=1': 'b1' is not set in the config; "
            "set it whole",
        ),
        ("b2", "config: override 'b2' must look like path=value"),
        ("transforms..b2=1", "config: override 'transforms..b2=1' must look like path=value"),
        ("=1", "config: override '=1' must look like path=value"),
    ],
)
def test_an_override_that_names_no_field_is_an_error(override, expected):
    assert error_message(CHAIN, [override]).startswith(expected)


def test_a_value_set_by_override_is_checked_like_any_other():
    assert error_message(CHAIN, ["transforms.0.b2=1.5"]) == (
        "transforms[0].b2: must be in [0, 1), got 1.5"
    )


def test_overrides_must_be_a_list():
    with pytest.raises(TypeError, match="list of 'path=value' strings"):
        gradtx.from_config(CHAIN, "transforms.0.b2=0.9")


# ---------------------------------------------------------------- user registration


@pytest.fixture
def clean_registry(monkeypatch):
    """Registrations made by a test are forgotten after it."""
    monkeypatch.setattr(registry, "_BY_NAME", dict(registry._BY_NAME))


def _define_scale_by_signed_step():
    class scale_by_signed_step(gradtx.Transformation):  # noqa: N801
        """Replaces each update by its sign, times ``magnitude``.

        Args:
          magnitude: the size of every step.
          keep_zeros: whether zero stays zero.
        """

        magnitude: float = 1.0
        keep_zeros: bool = gradtx.base.static_field(True)

        def __post_init__(self):
            gradtx.checks.check_number("magnitude", self.magnitude, low=0.0)

        def init(self, params):
            return gradtx.EmptyState()

        def update(self, updates, state, params=None, **extra_args):
            return jax.tree.map(lambda u: self.magnitude * jnp.sign(u), updates), state

    return scale_by_signed_step


def test_register_makes_a_plain_subclass_a_serializable_value(clean_registry):
    cls = gradtx.register(_define_scale_by_signed_step())
    assert dataclasses.is_dataclass(cls)
    tx = gradtx.chain(cls(magnitude=0.5, keep_zeros=False), gradtx.scale(-1.0))
    assert repr(tx) == (
        "chain(scale_by_signed_step(magnitude=0.5, keep_zeros=False), scale(step_size=-1.0))"
    )
    config = gradtx.to_config(tx)
    assert config["transforms"][0] == {
        "name": "scale_by_signed_step",
        "magnitude": 0.5,
        "keep_zeros": False,
    }
    assert gradtx.from_config(as_json(config)) == tx
    assert jax.tree.leaves(cls(0.5)) == [0.5], "plain fields are hyperparameters (leaves)"
    updates, _ = jax.jit(lambda t, g: t.update(g, t.init(g)))(tx, jnp.array([2.0, -3.0]))
    np.testing.assert_allclose(updates, [-0.5, 0.5])
    assert error_message(config, ["transforms.0.magnitude=-1"]) == (
        "transforms[0].magnitude: must be >= 0, got -1"
    )


def test_register_accepts_a_class_that_is_already_a_value_class(clean_registry):
    cls = gradtx.base.value_class(_define_scale_by_signed_step())
    assert gradtx.register(cls) is cls
    assert registry.lookup("scale_by_signed_step") is cls


def test_a_registered_alias_keeps_its_name(clean_registry):
    @gradtx.register
    class signed_step_sgd(gradtx.Alias):  # noqa: N801
        learning_rate: float = gradtx.base.hyperparameter()

        def expand(self):
            return gradtx.chain(gradtx.scale_by_learning_rate(self.learning_rate))

    config = gradtx.to_config(signed_step_sgd(0.1))
    assert config == {"name": "signed_step_sgd", "learning_rate": 0.1}
    assert gradtx.from_config(config) == signed_step_sgd(0.1)


def test_register_refuses_a_second_class_with_the_same_name(clean_registry):
    first = gradtx.register(_define_scale_by_signed_step())

    class scale(gradtx.Transformation):  # noqa: N801
        pass

    taken = r"'scale' is already registered by gradtx\.transforms\.scale\.scale"
    with pytest.raises(ValueError, match=taken):
        gradtx.register(scale)
    assert registry.lookup("scale") is gradtx.scale
    # Running the same definition again (a notebook cell) replaces it.
    second = gradtx.register(_define_scale_by_signed_step())
    assert second is not first and registry.lookup("scale_by_signed_step") is second


def test_register_refuses_what_is_not_a_value_class(clean_registry):
    with pytest.raises(TypeError, match="subclass of gradtx.Transformation"):
        gradtx.register(optax.GradientTransformation)
    with pytest.raises(TypeError, match="subclass of gradtx.Transformation"):
        gradtx.register(gradtx.sgd(0.1))
