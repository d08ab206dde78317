"""gradtx: composable gradient transformations for JAX, as values."""

from gradtx import contrib
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
from gradtx.orbax_checkpoint import OrbaxCheckpoints
from gradtx.registry import register
from gradtx.schedules import (
    constant_schedule,
    cosine_decay_schedule,
    cosine_onecycle_schedule,
    custom_schedule,
    exponential_decay,
    join_schedules,
    linear_onecycle_schedule,
    linear_schedule,
    piecewise_constant_schedule,
    piecewise_interpolate_schedule,
    polynomial_schedule,
    sgdr_schedule,
    warmup_constant_schedule,
    warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule,
    warmup_rsqrt_schedule,
    wsd_schedule,
)
from gradtx.sharding import state_shardings
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
from gradtx.transforms.adadelta import ScaleByAdaDeltaState, adadelta, scale_by_adadelta
from gradtx.transforms.adam import ScaleByAdamState, scale_by_adam
from gradtx.transforms.adamax import adamax, adamaxw, scale_by_adamax
from gradtx.transforms.adan import ScaleByAdanState, adan, scale_by_adan
from gradtx.transforms.ademamix import (
    ScaleByAdemamixState,
    ScaleBySimplifiedAdEMAMixState,
    ademamix,
    scale_by_ademamix,
    scale_by_simplified_ademamix,
    simplified_ademamix,
)
from gradtx.transforms.adopt import adopt, scale_by_adopt
from gradtx.transforms.amsgrad import ScaleByAmsgradState, amsgrad, scale_by_amsgrad
from gradtx.transforms.averaging import (
    EmaState,
    LookaheadParams,
    LookaheadState,
    ema,
    lookahead,
)
from gradtx.transforms.belief import ScaleByBeliefState, adabelief, scale_by_belief
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
from gradtx.transforms.factored import (
    FactoredState,
    adafactor,
    scale_by_factored_rms,
    scale_by_param_block_rms,
)
from gradtx.transforms.freezing import freeze, selective_transform, set_to_zero
from gradtx.transforms.lion import ScaleByLionState, lion, scale_by_lion
from gradtx.transforms.masking import MaskedNode, MaskedState, masked
from gradtx.transforms.momentum import TraceState, trace
from gradtx.transforms.muon import (
    MuonState,
    muon,
    scale_by_muon,
    scale_by_shape,
)
from gradtx.transforms.muon_matrices import MuonDimensionNumbers
from gradtx.transforms.noise import AddNoiseState, add_noise, noisy_sgd
from gradtx.transforms.novograd import ScaleByNovogradState, novograd, scale_by_novograd
from gradtx.transforms.optimistic import (
    optimistic_adam,
    optimistic_adam_v2,
    optimistic_gradient_descent,
    scale_by_optimistic_gradient,
)
from gradtx.transforms.partition import (
    MultiTransformState,
    PartitionState,
    explain_labels,
    multi_transform,
    partition,
    path_labels,
)
from gradtx.transforms.plateau import ReduceLROnPlateauState, reduce_on_plateau
from gradtx.transforms.polyak import polyak_sgd, scale_by_polyak
from gradtx.transforms.radam import radam, scale_by_radam
from gradtx.transforms.rms import (
    ScaleByRmsState,
    ScaleByRmsWithCountState,
    ScaleByRssState,
    ScaleByRStdDevState,
    ScaleByRStdDevWithCountState,
    adagrad,
    rmsprop,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
)
from gradtx.transforms.rprop import ScaleByRpropState, rprop, scale_by_rprop
from gradtx.transforms.scale import (
    ScaleByScheduleState,
    identity,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from gradtx.transforms.schedule_free import (
    ScheduleFreeState,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_sgd,
)
from gradtx.transforms.sign import scale_by_sign, sign_sgd, signum
from gradtx.transforms.sm3 import ScaleBySM3State, scale_by_sm3, sm3
from gradtx.transforms.stateless import stateless, stateless_with_tree_map
from gradtx.transforms.trust_ratio import (
    ScaleByTrustRatioState,
    fromage,
    lamb,
    lars,
    scale_by_trust_ratio,
)
from gradtx.transforms.weight_decay import WeightDecaySchedule, add_decayed_weights
from gradtx.transforms.yogi import scale_by_yogi, yogi
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
    "FactoredState",
    "GradientTransformation",
    "LookaheadParams",
    "LookaheadState",
    "MaskedNode",
    "MaskedState",
    "MultiSteps",
    "MultiStepsState",
    "MultiTransformState",
    "MuonDimensionNumbers",
    "MuonState",
    "NonNegativeParamsState",
    "Optimizer",
    "OrbaxCheckpoints",
    "PartitionState",
    "ReduceLROnPlateauState",
    "ScaleByAdaDeltaState",
    "ScaleByAdamState",
    "ScaleByAdanState",
    "ScaleByAdemamixState",
    "ScaleByAmsgradState",
    "ScaleByBeliefState",
    "ScaleByLionState",
    "ScaleByNovogradState",
    "ScaleByRStdDevState",
    "ScaleByRStdDevWithCountState",
    "ScaleByRmsState",
    "ScaleByRmsWithCountState",
    "ScaleByRpropState",
    "ScaleByRssState",
    "ScaleBySM3State",
    "ScaleByScheduleState",
    "ScaleBySimplifiedAdEMAMixState",
    "ScaleByTrustRatioState",
    "Schedule",
    "ScheduleFreeState",
    "ScheduleLike",
    "TraceState",
    "Transformation",
    "Value",
    "WeightDecaySchedule",
    "ZeroNansState",
    "accumulate",
    "adabelief",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "adan",
    "adaptive_grad_clip",
    "add_decayed_weights",
    "add_noise",
    "ademamix",
    "adopt",
    "amsgrad",
    "apply_every",
    "apply_if_finite",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "constant_schedule",
    "contrib",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "custom_schedule",
    "ema",
    "explain_labels",
    "exponential_decay",
    "foreign",
    "freeze",
    "from_config",
    "fromage",
    "fused_apply",
    "global_norm",
    "hyperparams",
    "identity",
    "join_schedules",
    "keep_params_nonnegative",
    "lamb",
    "lars",
    "linear_onecycle_schedule",
    "linear_schedule",
    "lion",
    "load_config",
    "lookahead",
    "masked",
    "multi_transform",
    "muon",
    "nadam",
    "nadamw",
    "named_chain",
    "noisy_sgd",
    "novograd",
    "optimistic_adam",
    "optimistic_adam_v2",
    "optimistic_gradient_descent",
    "partition",
    "path_labels",
    "path_mask",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polyak_sgd",
    "polynomial_schedule",
    "radam",
    "reduce_on_plateau",
    "register",
    "restore_checkpoint",
    "rmsprop",
    "rprop",
    "save_checkpoint",
    "save_config",
    "scale",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_adan",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_amsgrad",
    "scale_by_belief",
    "scale_by_factored_rms",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_muon",
    "scale_by_novograd",
    "scale_by_optimistic_gradient",
    "scale_by_param_block_rms",
    "scale_by_polyak",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_shape",
    "scale_by_sign",
    "scale_by_simplified_ademamix",
    "scale_by_sm3",
    "scale_by_stddev",
    "scale_by_trust_ratio",
    "scale_by_yogi",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "selective_transform",
    "set_to_zero",
    "sgd",
    "sgdr_schedule",
    "sign_sgd",
    "signum",
    "simplified_ademamix",
    "skip_large_updates",
    "skip_not_finite",
    "sm3",
    "state_shardings",
    "stateless",
    "stateless_with_tree_map",
    "to_config",
    "to_optax",
    "trace",
    "tree_get",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "warmup_rsqrt_schedule",
    "wsd_schedule",
    "yogi",
    "zero_nans",
]
