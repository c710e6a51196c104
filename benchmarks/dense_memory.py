"""Peak training memory and step time of densenet_bc_100_k12, plain vs memory-efficient, on CPU.

Each mode runs in its own process so that its peak resident memory (ru_maxrss) is its own.
Usage: python benchmarks/dense_memory.py [--batch-size 64] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from cnnsearch import build_model, load_arch


def one_mode(memory_efficient: bool, batch_size: int, steps: int) -> dict:
    arch = load_arch("densenet_bc_100_k12")
    stages = [stage.model_copy(update={"memory_efficient": memory_efficient}) for stage in arch.stages]
    torch.manual_seed(0)
    model = build_model(arch.model_copy(update={"stages": tuple(stages)})).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, labels = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.nn.functional.cross_entropy(model(images), labels)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "memory_efficient": memory_efficient,
        "peak_rss_mib": peak / 1024,
        "saved_for_backward_mib": saved / 2**20,
        "step_seconds": min(times),
        "rss_before_first_step_mib": baseline / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--mode", choices=["plain", "efficient"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(one_mode(args.mode == "efficient", args.batch_size, args.steps)))
        return
    from _report import machine, write

    rows = []
    for mode in ("plain", "efficient"):
        command = [sys.executable, __file__, "--mode", mode, "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
        rows.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
    plain, efficient = rows
    table = "\n".join(
        [
            f"densenet_bc_100_k12, batch {args.batch_size}, 32x32, CPU training step ({machine()}):",
            "",
            "| mode | peak RSS (MiB) | activations saved for backward (MiB) | step time (s) |",
            "| --- | ---: | ---: | ---: |",
            *(
                f"| {'memory_efficient' if r['memory_efficient'] else 'plain'} | {r['peak_rss_mib']:.0f} | "
                f"{r['saved_for_backward_mib']:.0f} | {r['step_seconds']:.2f} |"
                for r in rows
            ),
            "",
            f"Memory-efficient mode: {1 - efficient['peak_rss_mib'] / plain['peak_rss_mib']:.0%} less peak memory, "
            f"{efficient['saved_for_backward_mib'] / plain['saved_for_backward_mib']:.0%} of the activations stored, "
            f"{efficient['step_seconds'] / plain['step_seconds']:.2f}x the step time.",
        ]
    )
    write("dense_memory", {"batch_size": args.batch_size, "machine": machine(), "runs": rows}, table,
          f"python benchmarks/dense_memory.py --batch-size {args.batch_size}")


if __name__ == "__main__":
    main()
