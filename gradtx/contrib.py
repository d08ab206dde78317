"""Optax's ``optax.contrib`` names that gradtx has, so ported code keeps them.

Each name here is the same object as the top-level one (``gradtx.contrib.muon
is gradtx.muon``): with ``import gradtx as optax``, both ``optax.muon`` and
``optax.contrib.muon`` work. The rest of ``optax.contrib`` (Prodigy, SAM,
Sophia, ...) is not in gradtx yet.
"""

from gradtx.transforms.ademamix import (
    ScaleByAdemamixState,
    ScaleBySimplifiedAdEMAMixState,
    ademamix,
    scale_by_ademamix,
    scale_by_simplified_ademamix,
    simplified_ademamix,
)
from gradtx.transforms.adopt import (
    adopt,
    scale_by_adopt,
)
from gradtx.transforms.muon import (
    MuonState,
    muon,
    scale_by_muon,
)
from gradtx.transforms.muon_matrices import MuonDimensionNumbers
from gradtx.transforms.plateau import (
    ReduceLROnPlateauState,
    reduce_on_plateau,
)
from gradtx.transforms.schedule_free import (
    ScheduleFreeState,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_sgd,
)

__all__ = [
    "MuonDimensionNumbers",
    "MuonState",
    "ReduceLROnPlateauState",
    "ScaleByAdemamixState",
    "ScaleBySimplifiedAdEMAMixState",
    "ScheduleFreeState",
    "ademamix",
    "adopt",
    "muon",
    "reduce_on_plateau",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_muon",
    "scale_by_simplified_ademamix",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "simplified_ademamix",
]
