"""The transformation contract and the machinery that makes optimizers values.

Every transformation and schedule in gradtx is a frozen dataclass registered as a
JAX pytree. Numeric hyperparameters are pytree leaves, so they can be traced by
``jax.jit``, batched by ``jax.vmap`` and differentiated by ``jax.grad``; structural
options (dtypes, booleans, masks) are static and live in the tree definition.
"""

import dataclasses
import sys
import typing
from collections.abc import Callable, Mapping
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    NamedTuple,
    Protocol,
    TypeVar,
    overload,
    runtime_checkable,
)

import jax
import numpy as np

from gradtx import checks

PyTree = Any
Params = PyTree
Updates = PyTree
OptState = PyTree

_STATIC = "gradtx_static"
_SHOWN = "gradtx_shown"
_SCALAR = "gradtx_scalar"
_FINITE = "gradtx_finite"

ValueT = TypeVar("ValueT", bound="Value")


class EmptyState(NamedTuple):
    """State of a transformation that keeps none."""


def hyperparameter(
    default: Any = dataclasses.MISSING,
    *,
    shown: bool | None = None,
    kw_only: bool = False,
    scalar: bool = True,
    finite: bool = True,
) -> Any:
    """Declares a numeric hyperparameter: a pytree leaf (or a nested schedule).

    Every value class checks its hyperparameters when built: a concrete value
    must be a number (not a boolean, a string or ``None``, unless the default is
    ``None``), not NaN, 0-d when ``scalar`` and finite when ``finite``.

    Args:
      default: the default value, if any.
      shown: whether ``repr`` always prints the field. By default a field is
        printed when it has no default or its value differs from the default.
      kw_only: whether the field is keyword-only in the constructor.
      scalar: whether a concrete value must be 0-d (False for a sequence such
        as a schedule's boundaries).
      finite: whether infinity is refused (False where it means "no limit").

    Returns:
      A ``dataclasses.field``.
    """
    return dataclasses.field(
        default=default,
        kw_only=kw_only,
        metadata={_STATIC: False, _SHOWN: shown, _SCALAR: scalar, _FINITE: finite},
    )


def static_field(
    default: Any = dataclasses.MISSING, *, shown: bool | None = None, kw_only: bool = False
) -> Any:
    """Declares a structural option: kept in the tree definition, never traced.

    Args:
      default: the default value, if any.
      shown: as for :func:`hyperparameter`.
      kw_only: whether the field is keyword-only in the constructor.

    Returns:
      A ``dataclasses.field``.
    """
    return dataclasses.field(
        default=default, kw_only=kw_only, metadata={_STATIC: True, _SHOWN: shown}
    )


def _is_opaque(value: Any) -> bool:
    """A plain callable (a user's lambda schedule or mask) cannot be a leaf."""
    return callable(value) and not isinstance(value, Value)


def _comparable(value: Any) -> Any:
    """A hashable stand-in for a field value, so arrays compare by content."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            "a gradtx transformation holding traced hyperparameters cannot be "
            "compared or hashed; compare it outside jax.jit/vmap/grad"
        )
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        array = np.asarray(value)
        return ("array", array.dtype.str, array.shape, array.tobytes())
    if isinstance(value, tuple):
        return tuple(_comparable(item) for item in value)
    return value


class Value:
    """Base of every gradtx transformation and schedule.

    Subclasses are declared with :func:`value_class`. They compare and hash by
    the values of their fields, print like the call that built them and are JAX
    pytrees whose numeric hyperparameters are leaves.
    """

    if TYPE_CHECKING:
        # Every subclass is made a dataclass by value_class; this tells the type
        # checker so, for dataclasses.fields(self) and dataclasses.replace.
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def _comparison_key(self) -> tuple[Any, ...]:
        return tuple(_comparable(getattr(self, field.name)) for field in dataclasses.fields(self))

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        assert isinstance(other, Value)
        return self._comparison_key() == other._comparison_key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._comparison_key()))

    def __repr__(self) -> str:
        arguments = []
        for field in dataclasses.fields(self):
            if not field.init or not field.repr:
                continue
            value = getattr(self, field.name)
            shown = field.metadata.get(_SHOWN)
            if shown is None:
                shown = field.default is dataclasses.MISSING or not _equal(value, field.default)
            if shown:
                arguments.append(f"{field.name}={_format(value)}")
        return f"{type(self).__name__}({', '.join(arguments)})"


def _equal(value: Any, default: Any) -> bool:
    try:
        return bool(_comparable(value) == _comparable(default))
    except TypeError:
        return False


def _format(value: Any) -> str:
    if isinstance(value, dict):
        items = ", ".join(f"{_format(k)}: {_format(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, tuple):
        trailing = "," if len(value) == 1 else ""
        return "(" + ", ".join(_format(item) for item in value) + trailing + ")"
    return repr(value)


if sys.version_info >= (3, 11):
    from typing import dataclass_transform
elif TYPE_CHECKING:  # the type checker's bundled stubs always have typing_extensions
    from typing_extensions import dataclass_transform
else:  # Python 3.10 at run time: type checkers only; no runtime effect either way.

    def dataclass_transform(**_: Any) -> Callable[[Any], Any]:
        return lambda decorator: decorator


@overload
def value_class(cls: type[ValueT], *, pytree: bool = True) -> type[ValueT]: ...


@overload
def value_class(
    cls: None = None, *, pytree: bool = True
) -> Callable[[type[ValueT]], type[ValueT]]: ...


@dataclass_transform(
    frozen_default=True, field_specifiers=(hyperparameter, static_field, dataclasses.field)
)
def value_class(cls: type[ValueT] | None = None, *, pytree: bool = True) -> Any:
    """Makes ``cls`` a frozen dataclass and registers it as a JAX pytree.

    Fields declared with :func:`hyperparameter` become pytree leaves unless they
    hold a plain Python callable (which cannot be traced and so is kept static);
    fields declared with :func:`static_field` are always static.

    Args:
      cls: a subclass of :class:`Value`.
      pytree: register the class as a pytree node. A value with nothing to
        trace (such as :class:`gradtx.path_mask`) is better left a leaf: Optax
        recognises a callable mask by its leaves being callable.

    Returns:
      The same class, now a frozen dataclass (and a registered pytree node);
      used as ``@value_class(pytree=False)``, a decorator doing that.
    """
    if cls is None:
        return lambda later: value_class(later, pytree=pytree)
    cls.__post_init__ = _checking_hyperparameters(getattr(cls, "__post_init__", None))  # type: ignore[attr-defined]
    cls = dataclasses.dataclass(frozen=True, repr=False, eq=False)(cls)
    if not pytree:
        return cls
    fields = dataclasses.fields(cls)
    leaf_names = tuple(f.name for f in fields if not f.metadata.get(_STATIC, False))
    static_names = tuple(f.name for f in fields if f.metadata.get(_STATIC, False))

    def flatten_with_keys(obj: Any) -> tuple[list[tuple[Any, Any]], Any]:
        children, child_names, opaque = [], [], []
        for name in leaf_names:
            value = obj.__dict__[name]
            if _is_opaque(value):
                opaque.append((name, value))
            else:
                children.append((jax.tree_util.GetAttrKey(name), value))
                child_names.append(name)
        static = tuple((name, obj.__dict__[name]) for name in static_names)
        return children, (tuple(child_names), tuple(opaque), static)

    def flatten(obj: Any) -> tuple[list[Any], Any]:
        keyed, aux = flatten_with_keys(obj)
        return [value for _, value in keyed], aux

    def unflatten(aux: Any, children: Any) -> Any:
        # Bypasses __init__: leaves may be tracers or placeholders during tree
        # operations, and validation belongs to construction by the user.
        child_names, opaque, static = aux
        obj = object.__new__(cls)
        for name, value in zip(child_names, children):
            object.__setattr__(obj, name, value)
        for name, value in opaque + static:
            object.__setattr__(obj, name, value)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    if "update" in vars(cls) and cls.__module__.startswith("gradtx."):
        cls.update = _compiled_when_eager(vars(cls)["update"])  # type: ignore[attr-defined]
    return cls


def _checking_hyperparameters(post_init: Callable[[Any], None] | None) -> Callable[[Any], None]:
    """``__post_init__`` that runs the class's own, then checks every hyperparameter.

    The class's own checks run first: they give the range (``b1 must be in [0,
    1)``) and normalise values; the common checks catch what they let through
    (None, booleans, lists, arrays, infinity).
    """
    post_init = getattr(post_init, "__wrapped__", post_init)  # a parent's, already wrapped

    def post_init_then_check(self: Any) -> None:
        if post_init is not None:
            post_init(self)
        for field in _hyperparameter_fields(type(self)):
            checks.check_hyperparameter(
                field.name,
                getattr(self, field.name),
                scalar=field.metadata.get(_SCALAR, True),
                finite=field.metadata.get(_FINITE, True),
            )

    post_init_then_check.__wrapped__ = post_init  # type: ignore[attr-defined]
    return post_init_then_check


_HYPERPARAMETER_FIELDS: dict[type, tuple[dataclasses.Field[Any], ...]] = {}


def _hyperparameter_fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    """The constructor's hyperparameter fields of a value class (what both checks read),
    worked out once per class: ``update`` reads them on every trace."""
    fields = _HYPERPARAMETER_FIELDS.get(cls)
    if fields is None:
        fields = tuple(
            field
            for field in dataclasses.fields(cls)
            if field.init and not field.metadata.get(_STATIC, True)
        )
        _HYPERPARAMETER_FIELDS[cls] = fields
    return fields


def check_ready(value: "Value") -> None:
    """Raises ValueError if a hyperparameter of ``value`` (or of a schedule it holds) is
    None where a number is needed, or is an array (see
    :func:`gradtx.checks.check_hyperparameter_ready`).

    Transformations it holds are not looked at: their own ``update`` checks them.
    """
    for field in _hyperparameter_fields(type(value)):
        member = getattr(value, field.name)
        if isinstance(member, Value) and not isinstance(member, Transformation):
            check_ready(member)
            continue
        checks.check_hyperparameter_ready(
            f"{type(value).__name__}.{field.name}",
            member,
            optional=none_allowed(field),
            scalar=field.metadata.get(_SCALAR, True),
        )


def none_allowed(field: dataclasses.Field[Any]) -> bool:
    """Whether ``None`` has a meaning for a field: a static one, or a hyperparameter
    whose default is None or whose annotation is ``X | None``."""
    if field.metadata.get(_STATIC, True):
        return True
    return field.default is None or type(None) in typing.get_args(field.type)


def _runs_user_code(value: Any) -> bool:
    """Whether ``value`` holds a transformation gradtx did not write (``foreign`` ...).

    Such code may have Python side effects (a print, a list it appends to) that
    an eager call must keep, so it is not compiled.
    """
    if getattr(type(value), "runs_user_code", False):
        return True
    children: list[Any] = []
    for field in dataclasses.fields(value):
        child = getattr(value, field.name)
        if isinstance(child, (tuple, list)):
            children.extend(child)
        elif isinstance(child, Mapping):
            children.extend(child.values())
        else:
            children.append(child)
    return any(isinstance(child, Value) and _runs_user_code(child) for child in children)


def _compiled_when_eager(update: Callable[..., Any]) -> Callable[..., Any]:
    """``update`` that, called outside any JAX transformation, runs through ``jax.jit``.

    XLA compiles a whole update differently from the same operations run one by
    one (it turns a division by a broadcast scalar into a multiplication by its
    reciprocal, and fuses), so an eager update would differ from the jitted one
    in the last bits. Compiling the eager call too makes them the same numbers,
    as a user moving a training loop under ``jax.jit`` expects. Inside ``jit``,
    ``vmap`` or ``grad`` (any traced input), or when the transformation holds
    one gradtx did not write (``foreign``), ``update`` runs as written.
    """

    def checked_update(
        self: Any, updates: Any, state: Any, params: Any = None, **extra_args: Any
    ) -> Any:
        # Reads only dtypes, shapes and static fields: run while tracing, once
        # per compilation, never per eager step.
        check_ready(self)
        if type(self).needs_floating_leaves:
            checks.check_floating_leaves(type(self).__name__, updates, params)
        return update(self, updates, state, params, **extra_args)

    # The transformation is static, as when a user's jitted step closes over
    # it: its hyperparameters are then the same compile-time constants.
    compiled = jax.jit(checked_update, static_argnums=0)

    def update_eagerly_compiled(
        self: Any, updates: Any, state: Any, params: Any = None, **extra_args: Any
    ) -> Any:
        leaves = jax.tree.leaves((self, updates, state, params, extra_args))
        concrete = all(
            isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, complex))
            and not isinstance(leaf, jax.core.Tracer)
            for leaf in leaves
        )
        # jax.config's options are attributes set at run time, unknown to mypy.
        jit_disabled = bool(getattr(jax.config, "jax_disable_jit"))  # noqa: B009
        if not concrete or jit_disabled or _runs_user_code(self):
            return checked_update(self, updates, state, params, **extra_args)
        try:
            hash(self)
        except TypeError:  # an unhashable foreign member, say
            return checked_update(self, updates, state, params, **extra_args)
        return compiled(self, updates, state, params, **extra_args)

    update_eagerly_compiled.__doc__ = update.__doc__
    update_eagerly_compiled.__name__ = update.__name__
    update_eagerly_compiled.__qualname__ = update.__qualname__
    update_eagerly_compiled.__wrapped__ = update  # type: ignore[attr-defined]
    return update_eagerly_compiled


class Transformation(Value):
    """Base of every gradtx gradient transformation (the Optax contract)."""

    # Whether a built-in rule refuses integer and boolean gradients and params
    # (they would be truncated when applied). Combinators and aliases leave the
    # check to the rules they hold, so a masked-out integer leaf is allowed.
    needs_floating_leaves: ClassVar[bool] = True

    def init(self, params: Params) -> OptState:
        """Returns the initial optimizer state for ``params``.

        Args:
          params: the parameter pytree the optimizer will update.

        Returns:
          The initial state.
        """
        raise NotImplementedError

    def update(
        self,
        updates: Updates,
        state: OptState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, OptState]:
        """Transforms ``updates`` and advances ``state``.

        Args:
          updates: the gradients (or updates from a previous transformation).
          state: the state returned by ``init`` or by a previous ``update``.
          params: the current parameters; needed by some transformations.
          **extra_args: ignored by built-in transformations, accepted for Optax
            compatibility.

        Returns:
          A pair of the transformed updates and the new state.
        """
        raise NotImplementedError


class _ContractMeta(type):
    """Makes ``isinstance(x, GradientTransformation)`` a check of the contract.

    Like a ``runtime_checkable`` Protocol: anything with callable ``init`` and
    ``update`` attributes (an Optax transformation, a gradtx value, a user's
    object) is a gradient transformation.
    """

    def __instancecheck__(cls, instance: Any) -> bool:
        return callable(getattr(instance, "init", None)) and callable(
            getattr(instance, "update", None)
        )


@value_class
class GradientTransformation(Transformation, metaclass=_ContractMeta):
    """The Optax contract, a pure ``init``/``update`` pair, built from two functions.

    ``GradientTransformation(init_fn, update_fn)`` works as Optax's does, for
    code that writes a transformation as a pair of functions; the result is a
    gradtx value (hashable by the functions' identity, usable in
    :func:`gradtx.chain`), though not one a config can name. ``isinstance(x,
    GradientTransformation)`` is true for anything with ``init`` and ``update``
    methods, Optax transformations and every gradtx transformation included.

    Args:
      init: ``init(params) -> state``.
      update: ``update(updates, state, params=None, **extra_args) -> (updates,
        state)``.

    Example:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> double = gradtx.GradientTransformation(
      ...     lambda params: gradtx.EmptyState(),
      ...     lambda updates, state, params=None: (jax.tree.map(lambda u: 2 * u, updates), state))
      >>> double.update(jnp.ones(2), double.init(None))[0]
      Array([2., 2.], dtype=float32)
      >>> isinstance(gradtx.adam(1e-3), gradtx.GradientTransformation)
      True
    """

    runs_user_code = True

    # Fields named like Optax's NamedTuple fields; as instance attributes they
    # take precedence over the inherited methods.
    init: Callable[[Params], OptState] = static_field(shown=True)  # type: ignore[assignment]
    update: Callable[..., tuple[Updates, OptState]] = static_field(shown=True)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for name in ("init", "update"):
            if not callable(getattr(self, name)):
                raise TypeError(f"{name} must be a function, got {getattr(self, name)!r}")


class Schedule(Value):
    """Base of every gradtx schedule: a callable from step count to value."""

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        """Returns the scheduled value at step ``count``."""
        raise NotImplementedError


@runtime_checkable
class ScheduleLike(Protocol):
    """Any callable from a step count to a value, gradtx's or a user's."""

    def __call__(self, count: jax.typing.ArrayLike) -> jax.typing.ArrayLike: ...


ScalarOrSchedule = jax.typing.ArrayLike | ScheduleLike

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "OptState",
    "Params",
    "ScalarOrSchedule",
    "Schedule",
    "ScheduleLike",
    "Transformation",
    "Updates",
    "Value",
    "hyperparameter",
    "static_field",
    "value_class",
]
