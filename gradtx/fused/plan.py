"""Which chains the one-pass step recognises, and where each piece's state sits.

:func:`gradtx.fused_apply` handles Adam(W), NAdam(W) and SGD, given as aliases
or as their chains (sgd with a weight decay nests its Optax-shaped chain in
another, flattened here); anything else takes the plain path.
"""

import dataclasses
from typing import Any

import jax

from gradtx.aliases import Alias
from gradtx.base import EmptyState, OptState, Transformation
from gradtx.combine import chain
from gradtx.transforms.adam import ScaleByAdamState, scale_by_adam
from gradtx.transforms.masking import MaskedState
from gradtx.transforms.momentum import TraceState, trace
from gradtx.transforms.scale import ScaleByScheduleState, identity, scale_by_learning_rate
from gradtx.transforms.weight_decay import WeightDecaySchedule, add_decayed_weights


class UnsupportedError(Exception):
    """The fast path does not apply; the plain path gives the answer."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where each recognised step sits in the chain (and so in its state tuple)."""

    members: tuple[Transformation, ...]
    learning_rate: int
    adam: int | None = None
    decay: int | None = None
    momentum: int | None = None

    def check_state(self, state: OptState) -> None:
        """Leaves a state that is not this chain's to the plain path's errors."""
        if not isinstance(state, tuple) or len(state) != len(self.members):
            raise UnsupportedError
        expected = {
            self.learning_rate: (ScaleByScheduleState, EmptyState),
            self.adam: (ScaleByAdamState,),
            self.decay: (WeightDecaySchedule, EmptyState, MaskedState),
            self.momentum: (TraceState,),
        }
        for index, state_types in expected.items():
            if index is not None and not isinstance(state[index], state_types):
                raise UnsupportedError


_ADAM_PATTERNS: dict[tuple[type[Transformation], ...], tuple[str, ...]] = {
    (scale_by_adam, scale_by_learning_rate): ("adam", "learning_rate"),
    (scale_by_adam, add_decayed_weights, scale_by_learning_rate): (
        "adam",
        "decay",
        "learning_rate",
    ),
}
_SGD_PATTERNS: dict[tuple[type[Transformation], ...], tuple[str, ...]] = {
    (scale_by_learning_rate,): ("learning_rate",),
    (trace, scale_by_learning_rate): ("momentum", "learning_rate"),
    (add_decayed_weights, scale_by_learning_rate): ("decay", "learning_rate"),
    (add_decayed_weights, trace, scale_by_learning_rate): (
        "decay",
        "momentum",
        "learning_rate",
    ),
}


def plan_for(tx: Any) -> Plan:
    """Recognises Adam(W), NAdam(W) and SGD, as aliases or as their chains."""
    if isinstance(tx, Alias):
        tx = tx.expand()
    if not isinstance(tx, chain):
        raise UnsupportedError
    # identity members (sgd without momentum) keep an EmptyState and do nothing.
    active = [(i, m) for i, m in enumerate(tx.transforms) if type(m) is not identity]
    kinds = tuple(type(member) for _, member in active)
    roles = _ADAM_PATTERNS.get(kinds) or _SGD_PATTERNS.get(kinds)
    if roles is None:
        raise UnsupportedError
    plan = Plan(
        members=tx.transforms,
        **{role: index for role, (index, _) in zip(roles, active)},  # type: ignore[arg-type]
    )
    for _, member in active:
        dtypes: tuple[str | None, ...]
        if isinstance(member, scale_by_adam):
            dtypes = (member.mu_dtype, member.nu_dtype)
        elif isinstance(member, trace):
            dtypes = (member.accumulator_dtype,)
        else:
            continue
        if any(dtype not in (None, "float32") for dtype in dtypes):
            raise UnsupportedError
    return plan


def count_of(member_state: Any) -> Any:
    # A member with a constant hyperparameter keeps Optax's EmptyState (whose
    # tuple.count method is not a count); a masked decay keeps it inside.
    if isinstance(member_state, MaskedState):
        member_state = member_state.inner_state
    return member_state.count if "count" in getattr(member_state, "_fields", ()) else None


def with_count(member_state: Any, count: jax.Array) -> Any:
    if isinstance(member_state, MaskedState):
        return MaskedState(inner_state=member_state.inner_state._replace(count=count))
    return member_state._replace(count=count)


def flattened(tx: Any) -> tuple[chain, tuple[int | None, ...]]:
    """A chain with chains among its members (sgd with weight decay) as one flat chain.

    Returns the flat chain and, per original member, the length of its nested
    chain (None for a plain member), to flatten and re-nest the state.
    """
    if isinstance(tx, Alias):
        tx = tx.expand()
    if not isinstance(tx, chain):
        raise UnsupportedError
    members: list[Transformation] = []
    lengths: list[int | None] = []
    for member in tx.transforms:
        if isinstance(member, Alias):
            member = member.expand()
        if isinstance(member, chain):
            members.extend(member.transforms)
            lengths.append(len(member.transforms))
        else:
            members.append(member)
            lengths.append(None)
    return chain(*members), tuple(lengths)


def flatten_state(state: OptState, lengths: tuple[int | None, ...]) -> tuple[Any, ...]:
    if not isinstance(state, tuple) or len(state) != len(lengths):
        raise UnsupportedError
    flat: list[Any] = []
    for member_state, length in zip(state, lengths):
        if length is None:
            flat.append(member_state)
        elif isinstance(member_state, tuple) and len(member_state) == length:
            flat.extend(member_state)
        else:
            raise UnsupportedError
    return tuple(flat)


def nest_state(flat: tuple[Any, ...], lengths: tuple[int | None, ...]) -> tuple[Any, ...]:
    nested, position = [], 0
    for length in lengths:
        if length is None:
            nested.append(flat[position])
            position += 1
        else:
            nested.append(tuple(flat[position : position + length]))
            position += length
    return tuple(nested)
