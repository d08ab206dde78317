"""Muon's matrices: dimension numbers for conv and stacked weights, and Newton-Schulz.

``MuonDimensionNumbers`` says which axes of a weight are its rows and columns;
``orthogonalize_via_newton_schulz`` orthogonalizes each such matrix. Used by
:mod:`gradtx.transforms.muon`.
"""

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks, tree_paths, trees
from gradtx.base import Value, static_field, value_class

PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")
# The floor of the first step's rescaling under "aol" and "schatten": Optax's
# default there, not the eps argument.
_PRECONDITIONING_EPS = 1e-8


@value_class(pytree=False)
class MuonDimensionNumbers(Value):
    """Which axes of a weight Muon orthogonalizes over: a value, as in Optax.

    A weight used as ``x @ W = y`` has its reduction (input) axes and its output
    axes; every other axis is a batch axis, each slice along it orthogonalized
    on its own. The weight is reshaped to ``(batch, prod(reduction axes),
    prod(output axes))`` for the Newton-Schulz iteration and back afterwards.
    The default, ``(0, 1)``, is a plain ``(fan_in, fan_out)`` matrix; a conv
    kernel ``(h, w, in, out)`` is ``MuonDimensionNumbers((0, 1, 2), 3)`` and a
    stack of layers ``(layers, m, n)`` is ``MuonDimensionNumbers(1, 2)``.
    Unlike Optax's NamedTuple it is a pytree leaf (a tree of them has the
    params' structure) and round-trips through :func:`gradtx.to_config`.

    Args:
      reduction_axis: an axis or tuple of axes (negative counts from the end).
      output_axis: an axis or tuple of axes, disjoint from ``reduction_axis``.

    Raises:
      TypeError: if an axis is not an integer.

    Example:
      >>> import gradtx
      >>> gradtx.MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)
      MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)
    """

    reduction_axis: int | tuple[int, ...] = static_field(default=0, shown=True)
    output_axis: int | tuple[int, ...] = static_field(default=1, shown=True)

    def __post_init__(self) -> None:
        for name in ("reduction_axis", "output_axis"):
            object.__setattr__(self, name, _axes(name, getattr(self, name)))

    def axes(self, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The non-negative reduction and output axes of a rank-``ndim`` weight.

        Raises ValueError if an axis is out of range, repeated, or in both.
        """
        normalized = []
        for name in ("reduction_axis", "output_axis"):
            value = getattr(self, name)
            given = (value,) if isinstance(value, int) else value
            if any(not -ndim <= axis < ndim for axis in given):
                raise ValueError(f"{name}={value!r} is out of range for a weight of rank {ndim}")
            normalized.append(tuple(axis % ndim for axis in given))
        reduction, output = normalized
        if len(set(reduction + output)) != len(reduction + output):
            raise ValueError(
                f"the reduction axes {reduction} and output axes {output} must be distinct "
                f"(from {self!r} on a weight of rank {ndim})"
            )
        return reduction, output


def _axes(name: str, value: Any) -> int | tuple[int, ...]:
    given = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    for axis in given:
        if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"{name} must be an int or a tuple of ints, got {value!r}")
    axes = tuple(int(axis) for axis in given)
    return axes if isinstance(value, (list, tuple)) else axes[0]


# ---------------------------------------------------------------- a tree of dimension numbers


class _DimensionNumbersDict(Mapping[Any, Any]):
    """A dict node of a stored tree of dimension numbers: hashable, printed like a dict.

    A config writes it as a JSON object (it is a Mapping); reading one back
    gives a dict, which the constructor freezes again.
    """

    __slots__ = ("_dict",)

    def __init__(self, items: Mapping[Any, Any]) -> None:
        self._dict = dict(items)

    def __getitem__(self, key: Any) -> Any:
        return self._dict[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __hash__(self) -> int:
        return hash(frozenset(self._dict.items()))

    def __repr__(self) -> str:
        return repr(self._dict)


def _from_optax(node: Any) -> MuonDimensionNumbers | None:
    """Optax's MuonDimensionNumbers (a NamedTuple) as gradtx's, else None."""
    if isinstance(node, tuple) and getattr(node, "_fields", None) == (
        "reduction_axis",
        "output_axis",
    ):
        return MuonDimensionNumbers(*node)
    return None


def frozen_spec(spec: Any, argument: str) -> Any:
    """A tree of dimension numbers as stored: dicts hashable, lists tuples, Optax's converted.

    A callable is kept as it is. Raises TypeError naming the place of a node
    that is not a MuonDimensionNumbers, None, dict, list or tuple.
    """
    if callable(spec):
        return spec

    def freeze(node: Any, where: str) -> Any:
        converted = _from_optax(node)
        if converted is not None:
            return converted
        if node is None or isinstance(node, MuonDimensionNumbers):
            return node
        if isinstance(node, Mapping):
            return _DimensionNumbersDict(
                {key: freeze(value, f"{where}[{key!r}]") for key, value in node.items()}
            )
        if isinstance(node, (list, tuple)):
            return tuple(freeze(value, f"{where}[{i}]") for i, value in enumerate(node))
        raise TypeError(
            f"{where} must be a MuonDimensionNumbers, None, or a dict, list or tuple of "
            f"them, got {node!r}"
        )

    return freeze(spec, argument)


def _thawed(node: Any) -> Any:
    if isinstance(node, _DimensionNumbersDict):
        return {key: _thawed(value) for key, value in node.items()}
    if isinstance(node, tuple):
        return tuple(_thawed(value) for value in node)
    return node


def _is_spec_leaf(node: Any) -> bool:
    return node is None or isinstance(node, MuonDimensionNumbers) or _from_optax(node) is not None


def leaves_and_specs(spec: Any, tree: Any, argument: str) -> tuple[Any, list[Any]]:
    """``tree``'s definition and, per leaf, its key path, the leaf and its dimension numbers.

    An entry of ``spec`` covers every leaf below its path (a prefix), so
    ``{"layers": MuonDimensionNumbers(1, 2)}`` covers a whole stack. Dict keys
    and attribute names match by name, list and tuple entries by index. A
    leaf whose entry is None (or with ``spec`` None) gets None: a plain matrix.
    """
    resolved = spec(tree) if callable(spec) else _thawed(spec)
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=trees.is_none)
    entries = {}
    for path, node in jax.tree_util.tree_flatten_with_path(resolved, is_leaf=_is_spec_leaf)[0]:
        node = _from_optax(node) or node
        if node is not None and not isinstance(node, MuonDimensionNumbers):
            raise TypeError(f"{argument} gave {node!r}, not a MuonDimensionNumbers or None")
        entries[tuple(tree_paths.key_name(key) for key in path)] = node
    found = []
    for path, leaf in flat:
        names = tuple(tree_paths.key_name(key) for key in path)
        match = [entries[names[:n]] for n in range(len(names) + 1) if names[:n] in entries]
        where = checks.key_path(path)
        if leaf is not None and resolved is not None and not match:
            raise ValueError(
                f"{where} has no entry in {argument}: give a tree of MuonDimensionNumbers "
                "or None with the parameters' structure (or a prefix of it)"
            )
        found.append((where, leaf, match[0] if match and resolved is not None else None))
    return treedef, found


def matrix_axes(
    leaf: jax.Array, spec: MuonDimensionNumbers | None, where: str
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The reduction and output axes of a leaf, with the error messages both pieces share."""
    if spec is None:
        if leaf.ndim != 2:
            raise ValueError(
                f"{where} has shape {leaf.shape}: Muon orthogonalizes matrices; give "
                "it MuonDimensionNumbers (e.g. MuonDimensionNumbers((0, 1, 2), 3) for a "
                "conv kernel) or leave it to another optimizer (muon sends it to AdamW)"
            )
        return (0,), (1,)
    if leaf.ndim < 2:
        raise ValueError(f"{where} has shape {leaf.shape}: Muon needs rank >= 2, got {spec!r}")
    try:
        return spec.axes(leaf.ndim)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


# ---------------------------------------------------------------- Newton-Schulz


def _quintic(x: jax.Array, a: jax.Array, coeffs: jax.Array) -> jax.Array:
    # f(X) = c0 X + (c1 A + c2 A A) X with A = X X^H, written as Optax does.
    b = coeffs[1] * a + coeffs[2] * a @ a
    return coeffs[0] * x + b @ x


def _newton_schulz_step(x: jax.Array, coeffs: jax.Array) -> jax.Array:
    return _quintic(x, x @ x.T.conj(), coeffs)


def _aol_first_step(x: jax.Array, coeffs: jax.Array) -> jax.Array:
    # Almost-orthogonal-layer rescaling of the rows, then the step (Boissin et al.).
    a = x @ x.T.conj()
    rescaling = jnp.clip(jnp.abs(a).sum(axis=-1), min=_PRECONDITIONING_EPS)
    s = jnp.expand_dims(jax.lax.rsqrt(rescaling), -1)
    return _quintic(x * s, a * s * s.transpose(-1, -2), coeffs)


def _schatten_first_step(x: jax.Array, coeffs: jax.Array) -> jax.Array:
    # Schatten-4 rescaling, then the step (Grishina et al.); Optax's x @ x.T.
    a = x @ x.T
    rescaling = jnp.clip(jnp.linalg.norm(a, ord="fro", axis=(-2, -1)), min=_PRECONDITIONING_EPS)
    s = jnp.expand_dims(jax.lax.rsqrt(rescaling), (0, -1))
    return _quintic(x * s, a * s**2, coeffs)


def _step(preconditioning: str) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    first = {"aol": _aol_first_step, "schatten": _schatten_first_step}.get(preconditioning)
    if first is None:
        return lambda i, x, coeffs: _newton_schulz_step(x, coeffs)
    return lambda i, x, coeffs: jax.lax.cond(
        i == 0,
        lambda x: first(x, coeffs),
        lambda x: _newton_schulz_step(x, coeffs),
        x,
    )


def orthogonalize_via_newton_schulz(
    x: jax.Array,
    ns_coeffs: jax.Array,
    ns_steps: int = 5,
    preconditioning: str = "frobenius",
    eps: jax.typing.ArrayLike = 1e-8,
    dimension_numbers: MuonDimensionNumbers | None = None,
) -> jax.Array:
    """Approximately orthogonalizes a matrix (or each matrix of a weight) by Newton-Schulz.

    For ``G = U S V^T`` it returns about ``U S' V^T``, ``S'`` in about (0.7, 1.2)
    (Jordan's quintic raises small singular values fast rather than converging
    exactly); Optax's algorithm step for step::

        X <- G^T if G has more rows than columns, else G
        X <- X / (||X||_F + eps)                      ("frobenius"; "spectral": ||X||_2)
        repeat ns_steps times (or once per row of a (n, 3) ns_coeffs):
            A <- X X^H
            X <- a X + (b A + c A A) X                (a, b, c) = ns_coeffs
        transpose back

    ``"aol"`` and ``"schatten"`` skip the first rescaling and rescale inside
    the first step instead.

    Args:
      x: a matrix, or a weight of any rank >= 2 with ``dimension_numbers``.
      ns_coeffs: a ``(3,)`` array of coefficients, or ``(n, 3)``: one row per step.
      ns_steps: the number of steps for ``(3,)`` coefficients.
      preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``.
      eps: added to the norm before dividing.
      dimension_numbers: the reduction and output axes of a weight that is not
        a plain ``(fan_in, fan_out)`` matrix; the other axes are batch axes.

    Returns:
      The orthogonalized array, shaped and typed like ``x``.

    Raises:
      ValueError: if ``x`` is not a matrix and has no ``dimension_numbers``, or
        ``ns_coeffs`` or ``preconditioning`` is not one of the above.

    Example:
      >>> import jax.numpy as jnp
      >>> from gradtx.transforms.muon import orthogonalize_via_newton_schulz
      >>> o = orthogonalize_via_newton_schulz(
      ...     jnp.array([[3.0, 0.0], [0.0, 0.1]]), jnp.array([3.4445, -4.7750, 2.0315]))
      >>> jnp.diag(o).round(2)  # both singular values pushed near 1
      Array([0.7 , 1.13], dtype=float32)
    """
    if preconditioning not in PRECONDITIONINGS:
        raise ValueError(
            f"preconditioning must be one of {', '.join(PRECONDITIONINGS)}, got {preconditioning!r}"
        )
    if ns_coeffs.ndim not in (1, 2) or ns_coeffs.shape[-1] != 3:
        raise ValueError(f"ns_coeffs must have shape (3,) or (n, 3), got {ns_coeffs.shape}")
    reduction, output = matrix_axes(x, dimension_numbers, f"an array of shape {x.shape}")
    step = _step(preconditioning)

    def orthogonalize(x: jax.Array, ns_coeffs: jax.Array, eps: Any) -> jax.Array:
        # f(X^T) = f(X)^T: iterate on the wide orientation, whose X X^H is smaller.
        transposed = x.shape[0] > x.shape[1]
        if transposed:
            x = x.T
        if preconditioning == "frobenius":
            x /= jnp.linalg.norm(x, ord="fro") + eps
        elif preconditioning == "spectral":
            x /= jnp.linalg.norm(x, ord=2) + eps
        coeffs = ns_coeffs.astype(x.dtype)
        if coeffs.ndim == 1:
            # Unrolled, as in Optax, so that it composes well with jax.vmap.
            x = jax.lax.fori_loop(0, ns_steps, lambda i, x: step(i, x, coeffs), x, unroll=True)
        else:

            def body(carry: tuple[jax.Array, jax.Array], row: jax.Array) -> Any:
                i, x = carry
                return (i + 1, step(i, x, row)), None

            (_, x), _ = jax.lax.scan(body, (jnp.asarray(0, jnp.int32), x), coeffs)
        return x.T if transposed else x

    batch = tuple(axis for axis in range(x.ndim) if axis not in reduction + output)
    order = batch + reduction + output
    sizes = [math.prod(x.shape[axis] for axis in axes) for axes in (batch, reduction, output)]

    def orthogonalize_all(x: jax.Array, ns_coeffs: jax.Array, eps: Any) -> jax.Array:
        grouped = x.transpose(order).reshape(sizes)
        result = jax.vmap(orthogonalize, in_axes=(0, None, None))(grouped, ns_coeffs, eps)
        return result.reshape([x.shape[axis] for axis in order]).transpose(
            tuple(int(axis) for axis in np.argsort(order))
        )

    explicit = _explicit_sharding(x)
    if explicit is None:
        return orthogonalize_all(x, ns_coeffs, eps)
    # On a mesh with Explicit axes each matmul would have to name its output's
    # sharding; the partitioner chooses them as on an Auto mesh (the same
    # collectives), and the result keeps the weight's sharding.
    return jax.sharding.auto_axes(orthogonalize_all, out_sharding=explicit.spec)(
        x, ns_coeffs, jnp.asarray(eps)
    )


def _explicit_sharding(x: jax.Array) -> Any:
    """``x``'s sharding when it is part of its type (a mesh with Explicit axes), else None."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    axis_types = getattr(mesh, "axis_types", ())
    if any(kind == jax.sharding.AxisType.Explicit for kind in axis_types):
        return sharding
    return None


# ---------------------------------------------------------------- scale_by_muon
