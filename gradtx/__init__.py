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
from gradtx.combine import chain, foreign, named_chain
from gradtx.config import ConfigError, from_config, to_config
from gradtx.config_files import load_config, save_config
from gradtx.fused import fused_apply
from gradtx.interop import to_optax
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
from gradtx.transforms.accumulation import (
    ApplyEvery,
    MultiSteps,
    MultiStepsState,
    accumulate,
    apply_every,
    skip_large_updates,
    skip_not_finite,
)
from gradtx.transforms.adam import ScaleByAdamState, scale_by_adam
from gradtx.transforms.averaging import (
    EmaState,
    LookaheadParams,
    LookaheadState,
    ema,
    lookahead,
)
from gradtx.transforms.clipping import (
    AdaptiveGradClipState,
    ClipByGlobalNormState,
    ClipState,
    adaptive_grad_clip,
    clip,
    clip_by_block_rms,
    clip_by_global_norm,
    global_norm,
)
from gradtx.transforms.conditional import ApplyIfFiniteState, apply_if_finite
from gradtx.transforms.constraining import (
    NonNegativeParamsState,
    ZeroNansState,
    keep_params_nonnegative,
    zero_nans,
)
from gradtx.transforms.freezing import freeze, selective_transform, set_to_zero
from gradtx.transforms.masking import MaskedNode, MaskedState, masked
from gradtx.transforms.momentum import TraceState, trace
from gradtx.transforms.noise import AddNoiseState, add_noise
from gradtx.transforms.partition import (
    MultiTransformState,
    PartitionState,
    explain_labels,
    multi_transform,
    partition,
    path_labels,
)
from gradtx.transforms.scale import (
    ScaleByScheduleState,
    identity,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from gradtx.transforms.stateless import stateless, stateless_with_tree_map
from gradtx.transforms.weight_decay import WeightDecaySchedule, add_decayed_weights
from gradtx.update import apply_updates

__version__ = "0.1.0"

__all__ = [
    "AdaptiveGradClipState",
    "AddNoiseState",
    "Alias",
    "ApplyEvery",
    "ApplyIfFiniteState",
    "Checkpoint",
    "CheckpointError",
    "ClipByGlobalNormState",
    "ClipState",
    "ConfigError",
    "EmaState",
    "EmptyState",
    "GradientTransformation",
    "LookaheadParams",
    "LookaheadState",
    "MaskedNode",
    "MaskedState",
    "MultiSteps",
    "MultiStepsState",
    "MultiTransformState",
    "NonNegativeParamsState",
    "Optimizer",
    "PartitionState",
    "ScaleByAdamState",
    "ScaleByScheduleState",
    "Schedule",
    "ScheduleLike",
    "TraceState",
    "Transformation",
    "Value",
    "WeightDecaySchedule",
    "ZeroNansState",
    "accumulate",
    "adam",
    "adamw",
    "adaptive_grad_clip",
    "add_decayed_weights",
    "add_noise",
    "apply_every",
    "apply_if_finite",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "constant_schedule",
    "cosine_decay_schedule",
    "custom_schedule",
    "ema",
    "explain_labels",
    "exponential_decay",
    "foreign",
    "freeze",
    "from_config",
    "fused_apply",
    "global_norm",
    "hyperparams",
    "identity",
    "join_schedules",
    "keep_params_nonnegative",
    "linear_schedule",
    "load_config",
    "lookahead",
    "masked",
    "multi_transform",
    "nadam",
    "nadamw",
    "named_chain",
    "partition",
    "path_labels",
    "path_mask",
    "piecewise_constant_schedule",
    "register",
    "restore_checkpoint",
    "save_checkpoint",
    "save_config",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "selective_transform",
    "set_to_zero",
    "sgd",
    "skip_large_updates",
    "skip_not_finite",
    "stateless",
    "stateless_with_tree_map",
    "to_config",
    "to_optax",
    "trace",
    "tree_get",
    "warmup_cosine_decay_schedule",
    "zero_nans",
]
