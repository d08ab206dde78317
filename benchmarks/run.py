"""Runs the performance benchmarks, prints their tables and writes them as JSON.

    python -m benchmarks.run [--quick] [--only step,compile,memory,model,trainstate,optimizer]
                             [--optimizers sgd_momentum,adam,...]
                             [--out benchmarks/results/performance.json]

Run it from the repository root after ``pip install -e '.[bench]'`` (torch is
optional: without it the torch.optim columns are left out). The machine may be
shared: every comparison is a ratio of medians measured in one process, with
the contenders alternating. A full run takes about ten minutes.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any

from benchmarks import common, compile_time, memory, model, step_time, train_state

SECTIONS = ("step", "compile", "memory", "model", "trainstate", "optimizer")


def optimizer_section(quick: bool) -> dict[str, Any] | None:
    """benchmarks/optimizer_step.py (Optimizer.step against a hand-written step), if present."""
    try:
        from benchmarks import optimizer_step
    except ImportError:
        print("skipped: benchmarks/optimizer_step.py is not there")
        return None
    repeats, steps = (5, 5) if quick else (30, 20)
    results = {
        name: optimizer_step.measure(shapes, repeats, steps)
        for name, shapes in optimizer_step.SIZES.items()
    }
    for name, row in results.items():
        print(f"  {name:32} Optimizer.step / hand-written step = {row['ratio']:.3f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no 3,000 leaves")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument(
        "--optimizers",
        default=",".join(step_time.OPTIMIZERS),
        help="comma-separated rows of the step table",
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).parent / "results" / "performance.json",
    )
    args = parser.parse_args()
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    optimizers = tuple(o.strip() for o in args.optimizers.split(",") if o.strip())
    unknown = set(optimizers) - set(step_time.OPTIMIZERS)
    if unknown:
        parser.error(
            f"unknown optimizers {sorted(unknown)}; choose from {', '.join(step_time.OPTIMIZERS)}"
        )

    report: dict[str, Any] = {"machine": common.machine(), "quick": args.quick}
    started = time.perf_counter()
    bandwidth = common.in_place_bandwidth()
    report["machine"]["in_place_bandwidth_gb_per_s"] = bandwidth / 1e9
    print("machine:", ", ".join(f"{k}={v}" for k, v in report["machine"].items()))
    if not common.torch_available():
        print("note: torch is not installed; the torch.optim comparison is skipped")

    if "step" in sections:
        print("\n== step time, 10M f32 params, jit + donation (ms per step; ratio = fused / optax)")
        step_time.print_header()
        report["step"] = step_time.run(args.quick, optimizers)
    if "compile" in sections:
        print("\n== compile time of an AdamW step (trace + lower + compile, seconds)")
        report["compile"] = compile_time.run(args.quick)
    if "memory" in sections:
        print("\n== memory of an AdamW step, 10M params in 10 leaves")
        report["memory"] = memory.run()
    if "model" in sections:
        print("\n== a model-sized tree: AdamW on a small transformer")
        report["model"] = model.run(args.quick)
    if "trainstate" in sections:
        print("\n== Flax TrainState.apply_gradients, AdamW, jit + donation (ms per step)")
        report["trainstate"] = train_state.run(args.quick)
    if "optimizer" in sections:
        print("\n== gradtx.Optimizer.step against a hand-written jitted step")
        report["optimizer"] = optimizer_section(args.quick)

    report["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
