"""gradtx: composable gradient transformations for JAX, as values."""

from gradtx.aliases import Alias, adam, adamw, nadam, nadamw, sgd
from gradtx.base import (
    EmptyState,
    GradientTransformation,
    Schedule,
    ScheduleLike,
    Transformation,
    Value,
)
from gradtx.combine import chain, foreign
from gradtx.schedules import (
    constant_schedule,
    cosine_decay_schedule,
    custom_schedule,
    exponential_decay,
    join_schedules,
    linear_schedule,
    piecewise_constant_schedule,
    warmup_cosine_decay_schedule,
)
from gradtx.transforms.adam import ScaleByAdamState, scale_by_adam
from gradtx.transforms.momentum import TraceState, trace
from gradtx.transforms.scale import (
    ScaleByLearningRateState,
    identity,
    scale,
    scale_by_learning_rate,
)
from gradtx.transforms.weight_decay import AddDecayedWeightsState, add_decayed_weights
from gradtx.update import apply_updates

__version__ = "0.1.0"

__all__ = [
    "AddDecayedWeightsState",
    "Alias",
    "EmptyState",
    "GradientTransformation",
    "ScaleByAdamState",
    "ScaleByLearningRateState",
    "Schedule",
    "ScheduleLike",
    "TraceState",
    "Transformation",
    "Value",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "constant_schedule",
    "cosine_decay_schedule",
    "custom_schedule",
    "exponential_decay",
    "foreign",
    "identity",
    "join_schedules",
    "linear_schedule",
    "nadam",
    "nadamw",
    "piecewise_constant_schedule",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "sgd",
    "trace",
    "warmup_cosine_decay_schedule",
]
