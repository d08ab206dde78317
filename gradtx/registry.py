"""The names a config may use: every built-in value class, plus the user's.

:func:`gradtx.from_config` builds only classes recorded here, looked up by name
in a dictionary; it never imports a module or evaluates a string.
"""

import dataclasses
import types
from typing import TypeVar, cast

from gradtx import aliases, base, combine, masks
from gradtx.base import Value, value_class
from gradtx.schedules import basic as basic_schedules
from gradtx.schedules import cyclic as cyclic_schedules
from gradtx.schedules import warmup as warmup_schedules
from gradtx.transforms import (
    accumulation,
    adadelta,
    adam,
    adamax,
    adan,
    ademamix,
    adopt,
    amsgrad,
    averaging,
    belief,
    clipping,
    conditional,
    constraining,
    factored,
    freezing,
    lion,
    masking,
    momentum,
    muon,
    muon_matrices,
    noise,
    novograd,
    optimistic,
    partition,
    plateau,
    polyak,
    radam,
    rms,
    rprop,
    scale,
    schedule_free,
    sign,
    sm3,
    stateless,
    trust_ratio,
    weight_decay,
    yogi,
)

ClassT = TypeVar("ClassT", bound=type)

# Value classes that hold a plain Python object (an Optax transformation, a
# function) and so cannot be written to a config, with what to do instead.
NOT_SERIALIZABLE: dict[type[Value], str] = {
    base.GradientTransformation: (
        "it is built from two Python functions, which a config cannot name; write "
        "a gradtx.Transformation subclass and decorate it with @gradtx.register "
        "(see docs/write_your_own.md)"
    ),
    combine.foreign: (
        "it wraps a transformation that is not a gradtx value (e.g. an Optax one), "
        "which a config cannot name; use the gradtx transformation of the same name, "
        "or write your own and decorate it with @gradtx.register "
        "(see docs/write_your_own.md)"
    ),
    basic_schedules.custom_schedule: (
        "it wraps a plain Python function, which a config cannot name; use a gradtx "
        "schedule (e.g. join_schedules of built-in ones), or write a Schedule "
        "subclass and decorate it with @gradtx.register (see docs/write_your_own.md)"
    ),
    stateless.stateless: (
        "it wraps a plain Python function, which a config cannot name; write a "
        "gradtx.Transformation subclass and decorate it with @gradtx.register "
        "(see docs/write_your_own.md)"
    ),
    stateless.stateless_with_tree_map: (
        "it wraps a plain Python function, which a config cannot name; write a "
        "gradtx.Transformation subclass and decorate it with @gradtx.register "
        "(see docs/write_your_own.md)"
    ),
}

_BUILTIN_MODULES: tuple[types.ModuleType, ...] = (
    aliases,
    combine,
    masks,
    basic_schedules,
    cyclic_schedules,
    warmup_schedules,
    accumulation,
    adadelta,
    adam,
    adamax,
    adan,
    ademamix,
    adopt,
    amsgrad,
    averaging,
    belief,
    clipping,
    conditional,
    constraining,
    factored,
    freezing,
    lion,
    masking,
    momentum,
    muon,
    muon_matrices,
    noise,
    novograd,
    optimistic,
    partition,
    plateau,
    polyak,
    radam,
    rms,
    rprop,
    scale,
    schedule_free,
    sign,
    sm3,
    stateless,
    trust_ratio,
    weight_decay,
    yogi,
)

_BY_NAME: dict[str, type[Value]] = {}


def _is_value_class(cls: type) -> bool:
    """Whether ``cls`` itself (not only a base) was made by ``value_class``."""
    return "__dataclass_fields__" in vars(cls) and issubclass(cls, Value)


def register(cls: ClassT) -> ClassT:
    """Makes a transformation or schedule class buildable by name from configs.

    The class is made a value class (a frozen dataclass and a JAX pytree, as by
    ``gradtx.base.value_class``) if it is not one yet, and recorded under its
    ``__name__``. It then prints, compares and hashes like the built-ins, and
    :func:`gradtx.to_config` / :func:`gradtx.from_config` handle it.

    Declare numeric hyperparameters with ``gradtx.base.hyperparameter`` (or a
    plain annotated field) and structural options (booleans, dtypes, sizes)
    with ``gradtx.base.static_field``, so ``jax.jit`` never traces them.

    Args:
      cls: a subclass of :class:`gradtx.Transformation`, :class:`gradtx.Alias`
        or :class:`gradtx.Schedule` (any :class:`gradtx.Value`, e.g. a mask).

    Returns:
      The class, now a registered value class.

    Raises:
      TypeError: if ``cls`` is not a :class:`gradtx.Value` subclass.
      ValueError: if another class is already registered under the same name
        (a class redefined in the same module, as when a notebook cell is run
        again, replaces its earlier definition).

    Example:
      >>> import gradtx, jax
      >>> @gradtx.register
      ... class scale_by_two(gradtx.Transformation):
      ...     def init(self, params):
      ...         return gradtx.EmptyState()
      ...     def update(self, updates, state, params=None, **extra_args):
      ...         return jax.tree.map(lambda u: 2 * u, updates), state
      >>> gradtx.to_config(gradtx.chain(scale_by_two()))
      {'name': 'chain', 'transforms': [{'name': 'scale_by_two'}]}
    """
    if not isinstance(cls, type) or not issubclass(cls, Value):
        raise TypeError(
            "@gradtx.register expects a subclass of gradtx.Transformation, "
            f"gradtx.Alias or gradtx.Schedule, got {cls!r}"
        )
    name = cls.__name__
    existing = _BY_NAME.get(name)
    if existing is not None and existing is not cls and not _redefines(cls, existing):
        raise ValueError(
            f"the name {name!r} is already registered by "
            f"{existing.__module__}.{existing.__qualname__}; rename "
            f"{cls.__module__}.{cls.__qualname__} so configs can tell them apart"
        )
    if not _is_value_class(cls):
        cls = cast(ClassT, value_class(cls))  # the same class, made a value class
    _BY_NAME[name] = cls
    return cls


def _redefines(cls: type, existing: type) -> bool:
    return (cls.__module__, cls.__qualname__) == (existing.__module__, existing.__qualname__)


def lookup(name: str) -> type[Value] | None:
    """The class registered under ``name``, or None."""
    return _BY_NAME.get(name)


def name_of(cls: type) -> str | None:
    """The name ``cls`` is registered under, or None if it is not registered."""
    name = cls.__name__
    return name if _BY_NAME.get(name) is cls else None


def names() -> tuple[str, ...]:
    """Every registered name, sorted."""
    return tuple(sorted(_BY_NAME))


def config_fields(cls: type[Value]) -> tuple[dataclasses.Field, ...]:
    """The fields a config of ``cls`` holds: its constructor arguments."""
    return tuple(field for field in dataclasses.fields(cls) if field.init)


def _register_builtins() -> None:
    for module in _BUILTIN_MODULES:
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and obj.__module__ == module.__name__
                and not obj.__name__.startswith("_")  # private bases, e.g. _AdamFamily
                and _is_value_class(obj)
                and obj not in NOT_SERIALIZABLE
            ):
                register(obj)


_register_builtins()
