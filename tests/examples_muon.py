"""Config round-trip examples: Muon (params {"w": f32[3,2], "b": f32[2]})."""

import gradtx

DECAY = gradtx.cosine_decay_schedule(0.02, decay_steps=100, alpha=0.1)
DION = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
MATRIX = gradtx.MuonDimensionNumbers()
TRANSPOSED = gradtx.MuonDimensionNumbers(reduction_axis=1, output_axis=0)

EXAMPLES = {
    "MuonDimensionNumbers": [
        MATRIX,
        gradtx.MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3),
        gradtx.MuonDimensionNumbers(reduction_axis=-2, output_axis=(-1,)),
    ],
    # scale_by_muon and scale_by_shape take matrices only (as in Optax): the
    # contract's 1-D "b" cannot go through them (see the report to the lead).
    "scale_by_muon": [
        gradtx.scale_by_muon(),
        gradtx.scale_by_muon(
            DION,
            5,
            0.9,
            1e-7,
            "bfloat16",
            nesterov=False,
            adaptive=True,
            preconditioning="aol",
            weight_dimension_numbers={"w": TRANSPOSED, "b": None},
        ),
        gradtx.scale_by_muon(
            ns_steps=3, preconditioning="schatten", weight_dimension_numbers=MATRIX
        ),
    ],
    "scale_by_shape": [
        gradtx.scale_by_shape(),
        gradtx.scale_by_shape({"w": TRANSPOSED, "b": None}, consistent_rms=0.2),
    ],
    "muon": [
        gradtx.muon(0.02),
        gradtx.muon(
            DECAY,
            "dion",
            6,
            0.9,
            1e-7,
            0.01,
            {"w": True, "b": False},
            "bfloat16",
            nesterov=False,
            adaptive=True,
            preconditioning="spectral",
            adam_b1=0.8,
            adam_b2=0.99,
            adam_eps_root=1e-9,
            adam_weight_decay=1e-4,
            adam_learning_rate=gradtx.linear_schedule(0.0, 1e-3, 10),
            muon_weight_dimension_numbers={"w": TRANSPOSED, "b": None},
            consistent_rms=0.2,
        ),
        gradtx.muon(
            1e-3, ns_coeffs=(3.0, -3.0, 1.0), ns_steps=2, muon_weight_dimension_numbers=[MATRIX]
        ),
    ],
}
