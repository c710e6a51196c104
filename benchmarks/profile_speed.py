"""Time of cnnsearch.profile (meta device) vs profiling a real model, ImageNet presets at 224x224.

Usage: python benchmarks/profile_speed.py
"""

from __future__ import annotations

import time

from _report import machine, write

from cnnsearch import build_model, load_arch, profile


def best_of(function, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rows = []
    for name in ["densenet121", "densenet169", "resnet50", "googlenet", "mobilenet_v2", "densenet_bc_100_k12"]:
        arch = load_arch(name)
        meta = best_of(lambda: profile(arch))
        real = best_of(lambda: profile(build_model(arch), input_size=arch.input_size), repeats=1)
        build = best_of(lambda: build_model(arch), repeats=1)
        rows.append({"preset": name, "meta_seconds": meta, "build_real_seconds": build, "build_and_profile_real_seconds": real})
    table = "\n".join(
        [
            f"Profiling one architecture ({machine()}):",
            "",
            "| preset | profile(arch) on meta (s) | build with weights (s) | build with weights + profile (s) |",
            "| --- | ---: | ---: | ---: |",
            *(
                f"| {r['preset']} | {r['meta_seconds']:.3f} | {r['build_real_seconds']:.3f} | {r['build_and_profile_real_seconds']:.3f} |"
                for r in rows
            ),
        ]
    )
    write("profile_speed", {"machine": machine(), "runs": rows}, table, "python benchmarks/profile_speed.py")


if __name__ == "__main__":
    main()
