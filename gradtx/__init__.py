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
from gradtx.checkpoint import (
    Checkpoint,
    CheckpointError,
    restore_checkpoint,
    save_checkpoint,
)
from gradtx.combine import chain, foreign
from gradtx.config import ConfigError, from_config, to_config
from gradtx.config_files import load_config, save_config
from gradtx.fused import fused_apply
from gradtx.masks import path_mask
from gradtx.optimizer import Optimizer
from gradtx.registry import register
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
from gradtx.state_lookup import hyperparams, tree_get
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
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "EmptyState",
    "GradientTransformation",
    "Optimizer",
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
    "from_config",
    "fused_apply",
    "hyperparams",
    "identity",
    "join_schedules",
    "linear_schedule",
    "load_config",
    "nadam",
    "nadamw",
    "path_mask",
    "piecewise_constant_schedule",
    "register",
    "restore_checkpoint",
    "save_checkpoint",
    "save_config",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "sgd",
    "to_config",
    "trace",
    "tree_get",
    "warmup_cosine_decay_schedule",
]
