"""Parameter groups: a different transformation for each labelled subset of the parameters."""

import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, NamedTuple

import jax

from gradtx import masks, tree_paths, trees
from gradtx.base import (
    OptState,
    Params,
    Transformation,
    Updates,
    Value,
    hyperparameter,
    static_field,
    value_class,
)
from gradtx.combine import NamedTransforms
from gradtx.transforms.masking import (
    check_prefix,
    is_params_placeholder,
    masked_init,
    masked_update,
)


class PartitionState(NamedTuple):
    """State of :class:`partition` (and of :class:`multi_transform`).

    Attributes:
      inner_states: a dict from each label to the ``MaskedState`` of its
        transformation, which keeps state only for the leaves with that label.
    """

    inner_states: Mapping[Hashable, OptState]


# Optax's older name for the same class.
MultiTransformState = PartitionState


class LabelTree(masks.FrozenTree):
    """A hashable, immutable holder for a pytree of labels (strings, usually).

    Like :class:`gradtx.masks.FrozenTree` for masks: a transformation must be
    hashable, a dict is not. Calling it with the parameters returns the tree.
    """

    __slots__ = ()

    def __init__(self, tree: Any) -> None:
        leaves, treedef = jax.tree.flatten(tree)
        for leaf in leaves:
            if callable(leaf) or not isinstance(leaf, Hashable):
                raise TypeError(
                    f"param_labels leaves must be hashable labels such as strings, got "
                    f"{leaf!r}; use a callable or gradtx.path_labels to compute labels "
                    "from the parameters"
                )
        self._treedef = treedef
        self._leaves = tuple(leaves)


def _path(path: tuple[Any, ...]) -> str:
    return tree_paths.path_string(path, "/") or "<root>"


@value_class(pytree=False)
class path_labels(Value):  # noqa: N801 - named like gradtx.path_mask
    """Labels parameters by regular expressions over their paths: the first matching rule wins.

    A leaf's path is its keys joined by ``/`` (``params["dense"]["bias"]`` is
    ``"dense/bias"``, ``params["layers"][0]["w"]`` is ``"layers/0/w"``), as for
    :class:`gradtx.path_mask`. Each rule is a ``(pattern, label)`` pair; a leaf
    gets the label of the first rule whose pattern it matches (``re.search``).
    Unlike a lambda it prints, compares, hashes and round-trips through
    :func:`gradtx.to_config`. :func:`gradtx.explain_labels` shows which
    leaves each rule matched.

    Args:
      rules: ``(pattern, label)`` pairs in order, or a dict from pattern to
        label (its order is kept). End with a catch-all such as
        ``(r".*", "default")`` so that every leaf gets a label.

    Raises:
      TypeError: if ``rules`` is a bare string, a rule is not a pair, a pattern
        is not a string or a label is None or unhashable.
      ValueError: if a pattern is not a valid regular expression; when called,
        naming the leaf's path and listing the rules, if a leaf matches no rule.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> labels = gradtx.path_labels([(r"bias$", "sgd"), (r".*", "adam")])
      >>> labels({"dense": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}})
      {'dense': {'bias': 'sgd', 'kernel': 'adam'}}
    """

    rules: tuple[tuple[str, Hashable], ...] = static_field()

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", _rules(self.rules))

    def label_of(self, path: str) -> Hashable:
        """The label of the leaf at ``path`` (e.g. ``"dense/bias"``).

        Args:
          path: a leaf's keys joined by ``/``.

        Returns:
          The label of the first rule whose pattern the path matches.

        Raises:
          ValueError: naming the path and listing the rules, if none matches.
        """
        for pattern, label in self.rules:
            if re.search(pattern, path):
                return label
        listed = ", ".join(f"({pattern!r}, {label!r})" for pattern, label in self.rules)
        raise ValueError(
            f"path_labels: the parameter {path!r} matches none of the rules [{listed}]; "
            "add a rule for it, or a catch-all such as ('.*', 'default') at the end"
        )

    def __call__(self, params: Any) -> Any:
        """The labels for ``params``: a tree of the same structure with a label per leaf.

        Args:
          params: the parameter tree (only its key paths are read).

        Returns:
          A tree with ``params``' structure and a label per leaf.
        """
        return jax.tree_util.tree_map_with_path(
            lambda path, _: self.label_of(tree_paths.path_string(path, "/")), params
        )


def _rules(rules: Any) -> tuple[tuple[str, Hashable], ...]:
    if isinstance(rules, Mapping):
        rules = tuple(rules.items())
    if isinstance(rules, (str, bytes)) or not isinstance(rules, Iterable):
        raise TypeError(
            f"rules must be a list of (pattern, label) pairs, got {rules!r}; write "
            "[(r'bias$', 'no_decay'), (r'.*', 'decay')]"
        )
    normalized = []
    for position, rule in enumerate(rules):
        if not isinstance(rule, (tuple, list)) or len(rule) != 2:
            raise TypeError(f"rules[{position}] must be a (pattern, label) pair, got {rule!r}")
        pattern, label = rule
        if not isinstance(pattern, str):
            raise TypeError(
                f"rules[{position}] pattern must be a regular expression string, got {pattern!r}"
            )
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"rules[{position}] is not a valid regular expression: {error} in {pattern!r}"
            ) from None
        if label is None or not isinstance(label, Hashable):
            raise TypeError(f"rules[{position}] label must be hashable and not None, got {label!r}")
        normalized.append((pattern, label))
    return tuple(normalized)


def _label_tree_for(param_labels: Any, tree: Any) -> Any:
    return param_labels(tree) if callable(param_labels) else param_labels


def _group_mask(labels: Any, label: Hashable) -> Any:
    return jax.tree.map(lambda leaf: leaf == label, labels)


def _labelled_leaves(labels: Any, params: Any) -> list[tuple[Hashable, str]]:
    """Each parameter leaf's label and path, in tree order (a prefix label covers its subtree)."""
    structure = trees.structure(labels)
    label_paths = jax.tree_util.tree_flatten_with_path(labels)[0]
    found = []
    for (prefix, label), subtree in zip(label_paths, structure.flatten_up_to(params)):
        for path, _ in jax.tree_util.tree_flatten_with_path(subtree)[0]:
            found.append((label, _path(prefix + path)))
    return found


@value_class
class partition(Transformation):  # noqa: N801 - Optax's name
    """Applies a different transformation to each labelled group of parameters.

    Update rule, for each label ``k`` with transformation ``T_k``: the leaves
    labelled ``k`` are updated by ``T_k`` as by
    ``masked(T_k, labels == k)``; the state is
    ``PartitionState({k: MaskedState(...)})``, Optax's layout.

    Args:
      transforms: a mapping from label to transformation (gradtx or Optax).
        A transformation whose label no parameter carries is allowed (it keeps
        an empty state), as in Optax.
      param_labels: the label of each leaf: a pytree of labels with the
        structure of the parameters (or a prefix of it: ``("generator",
        "discriminator")`` for a pair of trees), a callable from the
        parameters (at ``init``) or updates (at ``update``) to such a tree, or
        a :class:`gradtx.path_labels`, which also round-trips through
        :func:`gradtx.to_config`.
      mask_compatible_extra_args: also mask the extra keyword arguments of
        ``update`` whose tree structure is that of the updates.

    Raises:
      TypeError: if a transformation is not one, or ``param_labels`` is None or
        has an unhashable leaf.
      ValueError: naming the label and the leaves that carry it, if a label has
        no transformation (for a tree of labels when the partition is built;
        else at ``init``/``update``); naming the key path, if the labels do
        not fit the parameters.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.partition(
      ...     {"fast": gradtx.scale(-1.0), "slow": gradtx.scale(-0.1)},
      ...     gradtx.path_labels([(r"^b$", "slow"), (r".*", "fast")]),
      ... )
      >>> grads = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> tx.update(grads, tx.init(grads))[0]
      {'b': Array([-0.1, -0.1], dtype=float32), 'w': Array([-1., -1.], dtype=float32)}
    """

    needs_floating_leaves = False  # leaves integer leaves to its members' rules

    transforms: Mapping[Hashable, Transformation] = hyperparameter()
    param_labels: Any | Callable[[Any], Any] = static_field()
    mask_compatible_extra_args: bool = static_field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", NamedTransforms(self.transforms, "transforms"))
        labels = self.param_labels
        if labels is None:
            raise TypeError(
                "param_labels must be a pytree of labels, a callable returning one, or a "
                "gradtx.path_labels; got None"
            )
        if not callable(labels):
            labels = LabelTree(labels)
            self._check_labels(labels.tree, None, "")
        object.__setattr__(self, "param_labels", labels)

    def _check_labels(self, labels: Any, tree: Any, tree_name: str) -> None:
        if tree is None:
            leaves = [
                (label, _path(path))
                for path, label in jax.tree_util.tree_flatten_with_path(labels)[0]
            ]
        else:
            check_prefix(labels, tree, prefix_name="param_labels", tree_name=tree_name)
            leaves = _labelled_leaves(labels, tree)
        missing: dict[Any, list[str]] = {}
        for label, path in leaves:
            if label not in self.transforms:
                missing.setdefault(label, []).append(path)
        if missing:
            label, paths = next(iter(missing.items()))
            others = f" (and {len(missing) - 1} more labels)" if len(missing) > 1 else ""
            raise ValueError(
                f"param_labels: the label {label!r}, on {', '.join(paths)}, has no "
                f"transformation{others}; transforms has the labels {list(self.transforms)}"
            )

    def init(self, params: Params) -> OptState:
        if is_params_placeholder(params):  # optax.tree_utils.tree_map_params
            return PartitionState(
                inner_states={
                    label: masked_init(member, None, params)
                    for label, member in self.transforms.items()
                }
            )
        labels = _label_tree_for(self.param_labels, params)
        self._check_labels(labels, params, "parameters")
        return PartitionState(
            inner_states={
                label: masked_init(member, _group_mask(labels, label), params)
                for label, member in self.transforms.items()
            }
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        labels = _label_tree_for(self.param_labels, updates)
        self._check_labels(labels, updates, "updates")
        inner_states = getattr(state, "inner_states", None)
        if not isinstance(inner_states, Mapping) or set(inner_states) != set(self.transforms):
            found = sorted(map(repr, inner_states)) if isinstance(inner_states, Mapping) else None
            raise ValueError(
                f"the state does not belong to this {type(self).__name__}: expected a "
                f"PartitionState with the labels {list(self.transforms)}, got "
                f"{type(state).__name__}" + (f" with the labels {found}" if found else "")
            )
        new_states = {}
        for label, member in self.transforms.items():
            updates, new_states[label] = masked_update(
                member,
                _group_mask(labels, label),
                updates,
                inner_states[label],
                params,
                extra_args,
                mask_compatible_extra_args=self.mask_compatible_extra_args,
            )
        return updates, PartitionState(inner_states=new_states)


@value_class
class multi_transform(partition):  # noqa: N801 - Optax's name
    """Optax's older name for :class:`partition`: the same arguments, rule and state.

    Its state is a ``PartitionState`` (``gradtx.MultiTransformState`` is the
    same class, as in Optax).

    Args:
      transforms: a mapping from label to transformation.
      param_labels: a pytree of labels, a callable returning one, or a
        :class:`gradtx.path_labels`.
      mask_compatible_extra_args: also mask extra arguments shaped like the
        updates.

    Raises:
      TypeError: as :class:`partition`.
      ValueError: as :class:`partition`.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.multi_transform({"a": gradtx.scale(2.0)}, "a")
      >>> tx.update(jnp.ones(2), tx.init(jnp.ones(2)))[0]
      Array([2., 2.], dtype=float32)
    """


def explain_labels(labels: Any, params: Params) -> str:
    """Describes which parameters each rule or label selects, as text to print.

    For a :class:`gradtx.path_labels`, every rule in order with the paths of
    the leaves it labels (the first matching rule wins, so a later rule lists
    only what the earlier ones left), ``(none)`` for a rule that labels
    nothing, and the leaves no rule matches. For a tree of labels or a
    callable, every label (in order of first use) with its leaves. ``None``
    leaves of ``params`` are not parameters and are left out.

    Args:
      labels: a :class:`gradtx.path_labels`, a pytree of labels, a callable
        from params to one, or a :class:`partition` (its ``param_labels``).
      params: the parameter tree.

    Returns:
      The description, one line per rule or label and one indented line per
      leaf path (``dense/bias``).

    Raises:
      ValueError: naming the key path, if a tree of labels does not fit the
        parameters.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> params = {"dense": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}}
      >>> rules = gradtx.path_labels([(r"bias$", "sgd"), (r"scale$", "sgd"), (r".*", "adam")])
      >>> print(gradtx.explain_labels(rules, params))
      rule 0: 'bias$' -> 'sgd'
        dense/bias
      rule 1: 'scale$' -> 'sgd'
        (none)
      rule 2: '.*' -> 'adam'
        dense/kernel
    """
    if isinstance(labels, partition):
        labels = labels.param_labels
    if isinstance(labels, path_labels):
        return _explain_rules(labels, params)
    tree = _label_tree_for(labels, params)
    check_prefix(tree, params, prefix_name="labels", tree_name="parameters")
    groups: dict[Any, list[str]] = {}
    for label, path in _labelled_leaves(tree, params):
        groups.setdefault(label, []).append(path)
    lines = []
    for label, paths in groups.items():
        lines.append(f"label {label!r}:")
        lines.extend(f"  {path}" for path in paths)
    return "\n".join(lines)


def _explain_rules(rules: path_labels, params: Params) -> str:
    matched: list[list[str]] = [[] for _ in rules.rules]
    unmatched = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        text = tree_paths.path_string(path, "/")
        for position, (pattern, _) in enumerate(rules.rules):
            if re.search(pattern, text):
                matched[position].append(text)
                break
        else:
            unmatched.append(text)
    lines = []
    for position, ((pattern, label), paths) in enumerate(zip(rules.rules, matched)):
        lines.append(f"rule {position}: {pattern!r} -> {label!r}")
        lines.extend(f"  {path}" for path in paths or ["(none)"])
    if unmatched:
        lines.append("matched by no rule:")
        lines.extend(f"  {path}" for path in unmatched)
    return "\n".join(lines)
