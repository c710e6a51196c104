"""On one GPU (issue 19): the training loop against the model alone, trials sharing the GPU, time to accuracy.

(a) ``train()``'s training images/s on CIFAR-10 resident on the GPU against the model's
    own forward + backward + SGD step on one resident random batch of the same shape,
    same precision (the Recipe default: bf16 on an H100) and channels_last: resnet20 and
    mobilenet_v2_cifar at batch 128, densenet_bc_100_k12 at 64. Target: within 10%.
(d) the same with ``Recipe(compile=True)`` against the compiled model, with the compile
    time ``train()`` reports (cold caches: each run compiles into a fresh cache folder).
(b) aggregate training images/s of 1, 2 and 4 concurrent resnet20 trials, each in its own
    process, released together by a barrier once each has loaded the data and warmed up;
    aggregate = all images / (last end - first start), and each trial's peak GPU memory.
    Target: 4 trials >= 2x one.
(c) time to accuracy on the 45,000/5,000 split: resnet20 at batch 512 (the default peak lr, from
    the batch and the steps) for as many epochs as fit about 60 s at the rate a short probe measures.

Every measurement runs in a process of its own (a fresh CUDA context, no state carried
from one model to the next); each part that fails or runs out of time records its error
in the report and the others go on. The report is rewritten after every part. The whole
run keeps to a time budget (430 s; --quick 105 s).

Needs the CIFAR-10 training images as JPEG folders in ImageFolder layout (one folder per
class; pass the folder that holds them); they are decoded once, before any timing, into
--cache-dir.

Usage: python benchmarks/gpu.py PATH/TO/cifar10/train [--quick] [--out PATH.json] [--device cuda]
       python benchmarks/gpu.py --render PATH/gpu.json   # BENCHMARKS.md from a report brought back
       bash benchmarks/gpu_run.sh [--quick]             # on the rented machine, from the repository root
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository is not installed on the GPU machine

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from cnnsearch import build_model, load_arch  # noqa: E402
from cnnsearch.config import Arch, Recipe  # noqa: E402
from cnnsearch.data import load_dataset, split_dataset  # noqa: E402
from cnnsearch.space import Budget  # noqa: E402
from cnnsearch.train import fit_to_data, resolve_device, resolve_precision, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu.json"
COMMAND = "python benchmarks/gpu.py PATH/TO/cifar10/train"  # on the rented machine: bash benchmarks/gpu_run.sh
BATCHES = {"resnet20": 128, "mobilenet_v2_cifar": 128, "densenet_bc_100_k12": 64}
TRIAL_PRESET, TRIAL_BATCH = "resnet20", 128
TTA_PRESET, TTA_BATCH = "resnet20", 512
THRESHOLDS = (0.80, 0.85, 0.90, 0.92, 0.93, 0.94)
RESULT_MARK = "GPU-BENCHMARK-RESULT "
_STARTED = time.monotonic()
_T0 = time.time()  # the driver's start: workers log against it too
_LABEL = "main"


@dataclasses.dataclass(frozen=True)
class Sizes:
    steps: int  # (a, d): steps of the measured train() call and of the raw timing
    cold_steps: int  # (a): the first train() call of a process (CUDA and cuDNN warm-up), reported apart
    raw_warmup: int  # steps before the raw timing (the first compiles under torch.compile)
    compile_presets: tuple[str, ...]  # (d)
    trials: tuple[int, ...]  # (b): concurrent trial counts
    trial_images: int  # (b): training images of each trial
    trial_warmup_steps: int  # (b): a short train() call before the barrier
    tta_seconds: float  # (c): training time to fit
    tta_probe_steps: int  # (c): steps of the call that measures the rate
    time_budget: float  # seconds for the whole run
    batch_divisor: int = 1  # CPU smoke test only: smaller batches


FULL = Sizes(steps=300, cold_steps=30, raw_warmup=20, compile_presets=tuple(BATCHES), trials=(1, 2, 4), trial_images=135_000,
             trial_warmup_steps=20, tta_seconds=60.0, tta_probe_steps=40, time_budget=430.0)
QUICK = Sizes(steps=30, cold_steps=10, raw_warmup=5, compile_presets=("resnet20",), trials=(1, 2), trial_images=12_800,
              trial_warmup_steps=5, tta_seconds=5.0, tta_probe_steps=10, time_budget=105.0)
CPU_QUICK = Sizes(steps=3, cold_steps=1, raw_warmup=1, compile_presets=("resnet20",), trials=(1, 2), trial_images=64,
                  trial_warmup_steps=1, tta_seconds=3.0, tta_probe_steps=2, time_budget=600.0, batch_divisor=8)


def log(message: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    stream = sys.stdout if _LABEL == "main" else sys.stderr
    print(f"[{stamp} +{time.time() - _T0:6.1f}s {_LABEL}] {message}", file=stream, flush=True)


# Workers: one measurement each, in a process of its own ---------------------------------------


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        info |= {"device_name": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                 "cudnn": torch.backends.cudnn.version(),
                 "gpu_memory_gib": torch.cuda.get_device_properties(device).total_memory / 2**30}
    else:
        info["device_name"] = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return info


def _data(spec: dict[str, Any]):
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    data = load_dataset(f"imagefolder:{spec['folder']}", cache_dir=spec["cache_dir"])
    return data, split_dataset(data.labels, val_fraction=0.1, seed=0)


def _use_backend(spec: dict[str, Any]) -> None:
    """train() calls torch.compile(model): give it the backend asked for (eager: the CPU smoke test)."""
    backend = spec.get("compile_backend")
    if backend and backend != "inductor":
        compile_function = torch.compile
        torch.compile = lambda model, **kwargs: compile_function(model, backend=backend, **kwargs)  # type: ignore[assignment]


def _raw_rate(arch: Arch, batch: int, precision: str, device: torch.device, compiled: bool, steps: int,
              warmup: int) -> dict[str, Any]:
    """Forward + backward + SGD step of the bare model on one resident random batch: the ceiling for train()."""
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as train() sets it
    torch.manual_seed(0)
    model = build_model(arch).to(device, memory_format=torch.channels_last)
    forward = torch.compile(model) if compiled else model
    size = (batch, arch.in_channels, arch.input_size, arch.input_size)
    images = torch.randn(size, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, arch.num_classes, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = criterion(forward(images), labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    _reset_peak(device)
    start = time.perf_counter()
    step()
    _synchronize(device)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    _synchronize(device)
    repeats = 3
    per_repeat = max(1, steps // repeats)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(per_repeat):
            step()
        _synchronize(device)
        rates.append(per_repeat * batch / (time.perf_counter() - start))
    return {"raw_images_per_s": statistics.median(rates), "raw_rates": rates, "raw_steps": per_repeat * repeats,
            "raw_first_step_seconds": first, "raw_peak_memory_mib": _peak_mib(device)}


def _throughput(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """(a) and (d): train()'s images/s against the model alone."""
    _use_backend(spec)
    data, split = _data(spec)
    name, batch, compiled, steps = spec["preset"], spec["batch"], spec["compile"], spec["steps"]
    arch = fit_to_data(load_arch(name), data)
    recipe = Recipe(batch_size=batch, compile=compiled, precision=spec["precision"])
    precision = resolve_precision(recipe.precision, device)
    result: dict[str, Any] = {"preset": name, "batch": batch, "compile": compiled, "precision": precision, "steps": steps,
                              "compile_backend": spec.get("compile_backend") if compiled else None}
    if not compiled:
        # A process's first steps tune cuDNN's algorithms; torch.compile's first step (timed apart by train()) does that itself.
        log(f"{name}: first train() call, {spec['cold_steps']} steps (warm-up)")
        cold = train(arch, data, split, recipe=recipe, budget=Budget(epochs=1, max_images=spec["cold_steps"] * batch), device=device)
        result["train_cold_images_per_s"] = cold.train_images_per_s
        del cold
    log(f"{name}: train(), {steps} steps at batch {batch}, {precision}{', compiled' if compiled else ''}")
    _reset_peak(device)
    out = train(arch, data, split, recipe=recipe, budget=Budget(epochs=1, max_images=steps * batch), device=device)
    result |= {"train_images_per_s": out.train_images_per_s, "train_images": out.images, "train_call_seconds": out.seconds,
               "compile_seconds": out.compile_seconds if compiled else None, "status": out.status, "message": out.message,
               "val_acc": out.val_acc, "lr": out.lr, "train_peak_memory_mib": _peak_mib(device)}
    del out
    log(f"{name}: train() {result['train_images_per_s']:,.0f} img/s; now the model alone")
    result |= _raw_rate(arch, batch, precision, device, compiled, steps, spec["raw_warmup"])
    if compiled:
        result["raw_compile_seconds_warm_cache"] = result["raw_first_step_seconds"]  # same graph, compiled once already
    result["train_over_raw"] = result["train_images_per_s"] / result["raw_images_per_s"]
    log(f"{name}: model alone {result['raw_images_per_s']:,.0f} img/s, train/raw {result['train_over_raw']:.3f}")
    return result


def _trial(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """(b): one of N concurrent trials; trains once the barrier opens and reports its own window."""
    data, split = _data(spec)
    arch = fit_to_data(load_arch(TRIAL_PRESET), data)
    recipe = Recipe(batch_size=spec["batch"], precision=spec["precision"])
    train(arch, data, split, recipe=recipe, budget=Budget(epochs=1, max_images=spec["warmup_steps"] * spec["batch"]), device=device)
    Path(spec["ready"]).touch()
    go, deadline = Path(spec["go"]), time.monotonic() + spec["barrier_timeout"]
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the start barrier did not open within {spec['barrier_timeout']:.0f} s")
        time.sleep(0.001)
    images = spec["images"]
    budget = Budget(epochs=max(1, math.ceil(images / len(split.train))), max_images=images)
    start = time.time()
    out = train(arch, data, split, recipe=recipe, budget=budget, device=device)
    _synchronize(device)
    end = time.time()
    return {"start": start, "end": end, "window_seconds": end - start, "images": out.images,
            "train_images_per_s": out.train_images_per_s, "val_acc": out.val_acc, "status": out.status,
            "threads": torch.get_num_threads(), "peak_memory_mib": _peak_mib(device),
            "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20 if device.type == "cuda" else None}


def _time_to_accuracy(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """(c): as many epochs as fit the time asked for, at the rate a short probe measures."""
    data, split = _data(spec)
    batch = spec["batch"]
    arch = fit_to_data(load_arch(spec["preset"]), data)
    recipe = Recipe(batch_size=batch, precision=spec["precision"])
    log(f"{spec['preset']} batch {batch}: warm-up and a {spec['probe_steps']}-step probe of the rate")
    train(arch, data, split, recipe=recipe, budget=Budget(epochs=1, max_images=5 * batch), device=device)
    probe = train(arch, data, split, recipe=recipe, budget=Budget(epochs=1, max_images=spec["probe_steps"] * batch), device=device)
    rate = probe.train_images_per_s
    # Everything but training (set-up, BN re-estimation, validation) counted once per epoch: an upper bound.
    overhead = max(0.0, probe.seconds - probe.images / rate)
    epoch_seconds = len(split.train) / rate + overhead
    epochs = max(1, round(spec["seconds"] / epoch_seconds))
    log(f"probe {rate:,.0f} img/s, {overhead:.2f} s outside training: {epochs} epochs of {epoch_seconds:.2f} s")
    del probe
    start = time.perf_counter()
    out = train(arch, data, split, recipe=recipe, budget=Budget(epochs=epochs), device=device)
    wall = time.perf_counter() - start
    history = [dataclasses.asdict(report) for report in out.history]
    best = max(history, key=lambda report: report["val_acc"]) if history else None
    reached = {f"{t:.2f}": next((r["seconds"] for r in history if r["val_acc"] >= t), None) for t in THRESHOLDS}
    return {"preset": spec["preset"], "batch": batch, "lr": out.lr, "precision": out.precision, "target_seconds": spec["seconds"],
            "probe_images_per_s": rate, "probe_overhead_seconds": overhead, "epochs": epochs, "wall_seconds": wall,
            "train_seconds": out.seconds, "train_images_per_s": out.train_images_per_s, "status": out.status,
            "message": out.message, "final_val_acc": out.val_acc, "best_val_acc": best and best["val_acc"],
            "best_epoch": best and best["epoch"], "best_at_seconds": best and best["seconds"],
            "seconds_to_reach": reached, "reached_94": reached["0.94"] is not None,
            "history": [{k: r.get(k) for k in ("epoch", "seconds", "val_acc", "val_loss", "train_loss", "lr", "train_images_per_s")}
                        for r in history],
            "split": out.split}


WORKERS = {"throughput": _throughput, "trial": _trial, "tta": _time_to_accuracy}


def _worker(spec: dict[str, Any]) -> None:
    global _LABEL, _T0
    _LABEL, _T0 = spec["label"], spec["t0"]
    try:
        device = resolve_device(spec["device"])
        result = WORKERS[spec["kind"]](spec, device) | _environment(device)
    except BaseException as error:  # noqa: BLE001 - a one-shot run: report whatever went wrong
        traceback.print_exc()
        result = {"error": f"{type(error).__name__}: {error}"[:2000]}
    print(RESULT_MARK + json.dumps(result), flush=True)


# The driver ------------------------------------------------------------------------------------


class Driver:
    """Starts workers within the run's time budget and collects what they report."""

    def __init__(self, args: argparse.Namespace, sizes: Sizes, compile_cache: Path) -> None:
        self.args, self.sizes = args, sizes
        self.deadline = _STARTED + sizes.time_budget
        self.env = os.environ | {
            "PYTHONUNBUFFERED": "1",
            # Fresh compile caches: compile_seconds is what a first trial pays, not an earlier run's cache hit.
            "TORCHINDUCTOR_CACHE_DIR": str(compile_cache / "inductor"),
            "TRITON_CACHE_DIR": str(compile_cache / "triton"),
        }
        self.running: list[subprocess.Popen] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def spec(self, kind: str, label: str, **values: Any) -> dict[str, Any]:
        return {"kind": kind, "label": label, "t0": _T0, "device": self.args.device, "folder": str(self.args.folder),
                "cache_dir": str(self.args.cache_dir), "compile_backend": self.args.compile_backend,
                "precision": self.args.precision} | values

    def spawn(self, spec: dict[str, Any]) -> subprocess.Popen:
        # A session of its own, so a worker that runs out of time is killed with its compile workers.
        process = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], stdout=subprocess.PIPE,
                                   text=True, env=self.env, start_new_session=True)
        self.running.append(process)
        return process

    def kill(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if process in self.running:
            self.running.remove(process)

    def collect(self, process: subprocess.Popen, timeout: float) -> dict[str, Any]:
        try:
            stdout, _ = process.communicate(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            self.kill(process)
            process.communicate()
            return {"error": f"timed out after {timeout:.0f} s (the run's time budget or the part's cap)", "timed_out": True}
        finally:
            if process in self.running:
                self.running.remove(process)
        # Stop every process of its session: torch.compile's worker pool outlives a worker that dies.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for line in reversed(stdout.splitlines()):
            if line.startswith(RESULT_MARK):
                return json.loads(line.removeprefix(RESULT_MARK))
        return {"error": f"worker exited with code {process.returncode} without a report; stdout tail: {stdout[-500:]!r}"}

    def run(self, spec: dict[str, Any], cap: float) -> dict[str, Any]:
        timeout = min(cap, self.left())
        if timeout < 15:
            return {"error": f"skipped: {max(0.0, self.left()):.0f} s left of the {self.sizes.time_budget:.0f} s time budget",
                    "skipped": True}
        log(f"{spec['label']}: worker started (at most {timeout:.0f} s)")
        start = time.monotonic()
        result = self.collect(self.spawn(spec), timeout)
        result["process_seconds"] = time.monotonic() - start
        failed = f" - ERROR {result['error']}" if "error" in result else ""
        log(f"{spec['label']}: done in {result['process_seconds']:.1f} s{failed}")
        return result

    def concurrent(self, trials: int, cap: float) -> dict[str, Any]:
        """(b): N trial processes that wait at a barrier until all have loaded data and warmed up."""
        timeout = min(cap, self.left())
        if timeout < 20:
            return {"error": f"skipped: {max(0.0, self.left()):.0f} s left of the time budget", "skipped": True}
        barrier = Path(tempfile.mkdtemp(prefix=f"cnnsearch-gpu-barrier-{trials}-"))
        threads = max(1, (os.cpu_count() or 1) // trials)  # as a search gives each trial its share of the cores
        start = time.monotonic()
        log(f"b: {trials} concurrent {TRIAL_PRESET} trials, {threads} CPU threads each (at most {timeout:.0f} s)")
        processes = [
            self.spawn(self.spec("trial", f"b {trials}x #{i}", batch=max(1, TRIAL_BATCH // self.sizes.batch_divisor),
                                 images=self.sizes.trial_images, warmup_steps=self.sizes.trial_warmup_steps, threads=threads,
                                 ready=str(barrier / f"ready-{i}"), go=str(barrier / "go"), barrier_timeout=timeout))
            for i in range(trials)
        ]
        try:
            ready = 0
            while time.monotonic() - start < timeout * 0.6:
                ready = sum((barrier / f"ready-{i}").exists() for i in range(trials))
                if ready == trials or any(p.poll() is not None for p in processes):
                    break
                time.sleep(0.01)
            (barrier / "go").touch()
            log(f"b: {ready} of {trials} trials ready after {time.monotonic() - start:.1f} s; started together")
            workers = [self.collect(p, timeout - (time.monotonic() - start)) for p in processes]
        finally:
            for process in processes:
                self.kill(process)
            shutil.rmtree(barrier, ignore_errors=True)
        done = [w for w in workers if "error" not in w]
        result: dict[str, Any] = {"trials": trials, "batch": max(1, TRIAL_BATCH // self.sizes.batch_divisor),
                                  "threads_per_trial": threads, "ready_at_barrier": ready, "workers": workers,
                                  "process_seconds": time.monotonic() - start}
        if len(done) < trials:
            result["error"] = "; ".join(w["error"] for w in workers if "error" in w)
        if done:
            first, last = min(w["start"] for w in done), max(w["end"] for w in done)
            images = sum(w["images"] for w in done)
            result |= {"images": images, "window_seconds": last - first, "aggregate_images_per_s": images / (last - first),
                       "start_spread_seconds": max(w["start"] for w in done) - first,
                       "sum_train_images_per_s": sum(w["train_images_per_s"] for w in done),
                       "mean_train_images_per_s": statistics.mean(w["train_images_per_s"] for w in done),
                       "peak_memory_mib": [w["peak_memory_mib"] for w in done],
                       "peak_reserved_mib": [w["peak_reserved_mib"] for w in done]}
            log(f"b: {trials} trials: {result['aggregate_images_per_s']:,.0f} img/s together, "
                f"window {result['window_seconds']:.1f} s")
        return result

    def stop_all(self) -> None:
        for process in list(self.running):
            self.kill(process)


def _part(report: dict[str, Any], key: str, function, *args: Any) -> Any:
    """One part, whatever happens to it: an exception becomes an error string in the report."""
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001 - a one-shot run on rented hardware: keep the other parts
        traceback.print_exc()
        report["errors"].append(f"{key}: {type(error).__name__}: {error}")
        return {"error": f"{type(error).__name__}: {error}"}


def _save(report: dict[str, Any], out: Path) -> None:
    report["seconds"] = time.monotonic() - _STARTED
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(out.name + ".partial")
    staging.write_text(json.dumps(report, indent=2, default=str) + "\n")
    staging.replace(out)


def _nvidia_smi() -> str | None:
    try:
        query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit", "--format=csv,noheader"]
        return subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _new_report(args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    return {
        "benchmark": "gpu (issue 19)", "command": " ".join([Path(sys.executable).name, *sys.argv]), "quick": args.quick,
        "device": args.device, "parts": args.parts, "presets": args.presets, "precision_asked": args.precision,
        "compile_backend": args.compile_backend, "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "sizes": dataclasses.asdict(sizes), "batches": BATCHES, "environment": {"nvidia_smi": _nvidia_smi()},
        "throughput": {"eager": {}, "compile": {}}, "concurrent": {}, "time_to_accuracy": None, "errors": [],
    }


def _measure(args: argparse.Namespace, sizes: Sizes, report: dict[str, Any]) -> None:
    log(f"gpu.py {'--quick ' if args.quick else ''}on {args.device}: data {args.folder}, cache {args.cache_dir}, "
        f"time budget {sizes.time_budget:.0f} s; nvidia-smi: {report['environment']['nvidia_smi']}")
    start = time.monotonic()
    data = load_dataset(f"imagefolder:{args.folder}", cache_dir=args.cache_dir)  # decode once, before every timing
    report["data"] = data.describe() | {"classes": len(data.classes), "load_seconds": time.monotonic() - start,
                                        "cache_dir": str(args.cache_dir), "shape": list(data.images.shape)}
    del data
    log(f"data: {report['data']['images']:,} images loaded in {report['data']['load_seconds']:.1f} s")
    _save(report, args.out)

    compile_cache = Path(tempfile.mkdtemp(prefix="cnnsearch-gpu-compile-"))
    driver = Driver(args, sizes, compile_cache)
    try:
        def throughput(name: str, compiled: bool) -> dict[str, Any]:
            batch = max(1, BATCHES[name] // sizes.batch_divisor)
            spec = driver.spec("throughput", f"{'d' if compiled else 'a'} {name}", preset=name, batch=batch, compile=compiled,
                               steps=sizes.steps, cold_steps=sizes.cold_steps, raw_warmup=sizes.raw_warmup)
            return driver.run(spec, cap=(300 if compiled else 150))

        for name in [n for n in BATCHES if "a" in args.parts and n in args.presets]:  # (a)
            report["throughput"]["eager"][name] = _part(report, f"a {name}", throughput, name, False)
            _save(report, args.out)
        for trials in sizes.trials if "b" in args.parts else ():  # (b)
            report["concurrent"][str(trials)] = _part(report, f"b {trials}", driver.concurrent, trials, 150)
            _save(report, args.out)
        aggregate = {n: report["concurrent"].get(str(n), {}).get("aggregate_images_per_s") for n in sizes.trials}
        most = max(sizes.trials)
        if len(aggregate) > 1 and aggregate.get(1) and aggregate.get(most):
            report["concurrent"][f"ratio_{most}_vs_1"] = aggregate[most] / aggregate[1]
        tta = driver.spec("tta", "c time-to-accuracy", preset=args.tta_preset, batch=max(1, args.tta_batch // sizes.batch_divisor),
                          seconds=sizes.tta_seconds, probe_steps=sizes.tta_probe_steps)
        if "c" in args.parts:
            report["time_to_accuracy"] = _part(report, "c", driver.run, tta, sizes.tta_seconds * 2 + 90)  # (c)
            _save(report, args.out)
        # (d) last: its compile times are the least predictable.
        for name in [n for n in sizes.compile_presets if "d" in args.parts and n in args.presets]:
            report["throughput"]["compile"][name] = _part(report, f"d {name}", throughput, name, True)
            _save(report, args.out)
    finally:
        driver.stop_all()
        shutil.rmtree(compile_cache, ignore_errors=True)


def _finish(report: dict[str, Any], device: str) -> None:
    """Every part's error in one list, and the device as the workers saw it."""
    for key, value in _results(report):
        if not isinstance(value, dict) or "error" not in value or "worker" in key:
            continue
        if not any(error.startswith(f"{key}:") for error in report["errors"]):
            report["errors"].append(f"{key}: {value['error']}")
    environment = next((r for _, r in _results(report) if isinstance(r, dict) and "device_name" in r), None)
    if environment:
        report["environment"] |= {k: environment[k] for k in ("device_name", "torch", "cuda", "cudnn", "gpu_memory_gib", "python",
                                                              "cpu_count") if k in environment}
    else:
        report["environment"] |= {"torch": torch.__version__, "device_name": _device_name(device)}


def _results(report: dict[str, Any]):
    for mode, runs in report["throughput"].items():
        for name, result in runs.items():
            yield f"{'a' if mode == 'eager' else 'd'} {name}", result
    for trials, result in report["concurrent"].items():
        if isinstance(result, dict):
            yield f"b {trials}", result
            yield from ((f"b {trials} worker", w) for w in result.get("workers", []))
    yield "c", report["time_to_accuracy"]


def _device_name(device: str) -> str:
    try:
        return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU"
    except Exception as error:  # noqa: BLE001
        return f"unknown ({error})"


# The report as a table ---------------------------------------------------------------------------


def _f(value: Any, spec: str, suffix: str = "") -> str:
    return f"{value:{spec}}{suffix}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def table(report: dict[str, Any]) -> str:
    env = report.get("environment", {})
    device = env.get("device_name", report.get("device"))
    eager = report["throughput"]["eager"]
    precision = next((r["precision"] for r in eager.values() if "precision" in r), "?")
    asked = report.get("precision_asked", "auto")
    data = report.get("data", {})
    source = Path(str(data.get("source", "?")).removeprefix("imagefolder:"))
    cifar = ": CIFAR-10's training images as JPEG folders" if data.get("images") == 50_000 else ""
    lines = [
        f"{device}, torch {env.get('torch', '?')} (CUDA {env.get('cuda', '-')}), {env.get('cpu_count', '?')} CPU cores"
        f"{' - QUICK RUN, not for comparison' if report.get('quick') else ''}. {_f(data.get('images'), ',')} images "
        f"({source.parent.name}/{source.name}{cifar}) decoded once and resident on the "
        f"device, 90/10 train/validation split (seed 0); precision {precision} "
        f"({'Recipe default: auto' if asked == 'auto' else f'asked: {asked}'}), channels_last.",
        "",
        f"Training loop against the model alone: `train()`'s training images/s over {report['sizes']['steps']} steps (eager: after "
        "a first, warm-up call in the same process) against forward + backward + SGD step of the same model on one resident "
        "random batch of the same shape (median of 3 timings after warm-up). Compile: `Recipe(compile=True)`, cold caches.",
        "",
        "| preset | batch | torch.compile | train() img/s | model alone img/s | train / model | first train() call img/s "
        "| compile (s) | peak GPU memory (MiB) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, runs in report["throughput"].items():
        for name, r in runs.items():
            if "error" in r:
                lines.append(f"| {name} | {BATCHES.get(name, '')} | {'yes' if mode == 'compile' else 'no'} | error: {r['error'][:120]} "
                             "| | | | | |")
                continue
            lines.append(
                f"| {name} | {r['batch']} | {'yes' if r['compile'] else 'no'} | {_f(r['train_images_per_s'], ',.0f')} "
                f"| {_f(r['raw_images_per_s'], ',.0f')} | {_f(r['train_over_raw'], '.2f')} | {_f(r.get('train_cold_images_per_s'), ',.0f')} "
                f"| {_f(r.get('compile_seconds'), '.1f')} | {_f(r.get('train_peak_memory_mib'), ',.0f')} |"
            )
    concurrent = {k: v for k, v in report["concurrent"].items() if isinstance(v, dict)}
    one = concurrent.get("1", {}).get("aggregate_images_per_s")
    trial_batch = next((v["batch"] for v in concurrent.values() if "batch" in v), TRIAL_BATCH)
    lines += [
        "",
        f"Concurrent {TRIAL_PRESET} trials on the one device, each its own process (batch {trial_batch}, "
        f"{report['sizes']['trial_images']:,} images each, validation after each epoch included), released together once all "
        "had loaded the data and warmed up; aggregate = all images / (last end - first start):",
        "",
        "| trials | aggregate img/s | vs 1 trial | each trial's train() img/s | window (s) | peak GPU memory per trial (MiB) |",
        "| ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for trials, r in concurrent.items():
        if "aggregate_images_per_s" not in r:
            lines.append(f"| {trials} | error: {r.get('error', '?')[:120]} | | | | |")
            continue
        each = ", ".join(_f(w.get("train_images_per_s"), ",.0f") for w in r["workers"] if "error" not in w)
        memory = ", ".join(_f(m, ",.0f") for m in r["peak_memory_mib"] if m is not None)
        lines.append(f"| {trials} | {_f(r['aggregate_images_per_s'], ',.0f')} | {_f(one and r['aggregate_images_per_s'] / one, '.2f', 'x')} "
                     f"| {each} | {_f(r['window_seconds'], '.1f')} | {memory} |")
    lines.append("")
    bullets = []
    for name, r in eager.items():
        if "train_over_raw" in r:
            verdict = "within" if r["train_over_raw"] >= 0.9 else "NOT within"
            bullets.append(f"{name}: train() runs at {r['train_over_raw']:.0%} of the model alone, {verdict} 10% (target).")
    for name, r in report["throughput"]["compile"].items():
        if "train_over_raw" in r:
            versus = eager.get(name, {}).get("train_images_per_s")
            speedup = f"; {r['train_images_per_s'] / versus:.2f}x eager train()" if versus else ""
            bullets.append(f"{name} compiled ({r.get('compile_backend')}): {_f(r.get('compile_seconds'), '.1f')} s to compile; train() "
                           f"at {r['train_over_raw']:.0%} of the compiled model alone{speedup}.")
    for key, ratio in report["concurrent"].items():
        if key.startswith("ratio_"):
            most = key.split("_")[1]
            bullets.append(f"{most} concurrent trials: {ratio:.2f}x the images/s of one (target for 4: at least 2x).")
    t = report.get("time_to_accuracy") or {}
    if "final_val_acc" in t and t["final_val_acc"] is not None:
        reached = ", ".join(f"{float(k):.0%} at {v:.0f} s" for k, v in t["seconds_to_reach"].items() if v is not None) or "none"
        bullets.append(
            f"Time to accuracy: {t['preset']}, batch {t['batch']}, peak lr {t['lr']:.2f}, {t['epochs']} epochs fitted to "
            f"{t['target_seconds']:.0f} s: {t['wall_seconds']:.1f} s wall ({t['train_images_per_s']:,.0f} training img/s), final "
            f"val acc {t['final_val_acc']:.2%}, best {t['best_val_acc']:.2%} at {t['best_at_seconds']:.1f} s (epoch {t['best_epoch']}); "
            f"94% {'reached' if t['reached_94'] else 'not reached'}. Thresholds reached: {reached}."
        )
    elif t:
        bullets.append(f"Time to accuracy: error: {t.get('error', '?')[:200]}")
    lines += [f"- {b}" for b in bullets]
    if report.get("errors"):
        lines.append(f"- Errors: {'; '.join(e[:200] for e in report['errors'])}")
    return "\n".join(lines)


def _render(path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _report import write

    report = json.loads(path.read_text())
    write("gpu", report, table(report), COMMAND)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, help="CIFAR-10 training images in ImageFolder layout (CLASS/IMAGE.jpg)")
    parser.add_argument("--quick", action="store_true", help="a check that everything runs (about a minute and a half on a GPU)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON report (default: benchmarks/results/gpu.json)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a smoke test with --quick")
    parser.add_argument("--cache-dir", type=Path, help="decoded images (default: .cnnsearch-gpu-cache beside the data folder)")
    parser.add_argument("--time-budget", type=float, help="seconds for the whole run (default 430; --quick 105)")
    parser.add_argument("--precision", default=Recipe().precision, choices=["auto", "bf16", "fp16", "fp32"],
                        help="Recipe.precision (default: the Recipe default, auto: bf16 on an H100)")
    parser.add_argument("--compile-backend", help="torch.compile backend (default inductor; on CPU eager, a smoke test of the plumbing)")
    parser.add_argument("--parts", default="abcd", help="which parts to run: a (eager), b (concurrent), c (accuracy), d (compile)")
    parser.add_argument("--presets", default=",".join(BATCHES), help="presets of parts a and d, comma-separated")
    parser.add_argument("--tta-preset", default=TTA_PRESET, help=f"preset of part c (default {TTA_PRESET}; resnet56 is the other choice)")
    parser.add_argument("--tta-batch", type=int, default=TTA_BATCH, help=f"batch size of part c (default {TTA_BATCH}; the default peak lr follows the batch and the steps)")
    parser.add_argument("--render", type=Path, metavar="REPORT", help="write BENCHMARKS.md's section from a report and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(json.loads(args.worker))
        return
    if args.render:
        _render(args.render)
        return
    if args.folder is None:
        parser.error("the data folder is required")
    args.folder = args.folder.resolve()
    args.presets = [name.strip() for name in args.presets.split(",") if name.strip()]
    if unknown := sorted(set(args.presets) - set(BATCHES)):
        parser.error(f"--presets: unknown {unknown}; choose from {list(BATCHES)}")
    if args.cache_dir is None:
        parent = args.folder.parent
        args.cache_dir = (parent if os.access(parent, os.W_OK) else Path(tempfile.gettempdir())) / ".cnnsearch-gpu-cache"
    on_cpu = args.device == "cpu"
    args.compile_backend = args.compile_backend or ("eager" if on_cpu else "inductor")
    sizes = (CPU_QUICK if on_cpu else QUICK) if args.quick else FULL
    if args.time_budget:
        sizes = dataclasses.replace(sizes, time_budget=args.time_budget)
    args.out = args.out.resolve()

    report = _new_report(args, sizes)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed from outside: still stop the workers and save the report
    try:
        _measure(args, sizes, report)
    except BaseException as error:  # noqa: BLE001 - keep what was measured, even when interrupted
        traceback.print_exc()
        report["errors"].append(f"run: {type(error).__name__}: {error}")
    _finish(report, args.device)
    _save(report, args.out)
    try:
        if not args.quick and args.out == DEFAULT_OUT.resolve():
            _render(args.out)  # prints the table too
        else:
            print(table(report), flush=True)
    except Exception:  # noqa: BLE001 - the report is saved; a table can be rendered from it later
        traceback.print_exc()
    log(f"report: {args.out} ({report['seconds']:.0f} s, {len(report['errors'])} errors)")


if __name__ == "__main__":
    main()
