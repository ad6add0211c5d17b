"""The GPU check: what only a GPU can show about tlbench's numbers, as ranges, in under 8 minutes.

    bash benchmarks/gpu_check.sh             # one NVIDIA GPU: every step, results/gpu-check-<device>.md
    bash benchmarks/gpu_check.sh --dry-run   # any machine: the steps and budgets, each step's CPU part

Eleven steps, each in a fresh process under its own time budget (a step that
overruns is killed and failed; the others still run), each asserting its
figures against a pass band:

 1. preflight       no other process on the GPU; its identity; a peak-table entry
 2. cuda-tests      the tests that need CUDA (names with "cuda"), none skipped
 3. precision       fp32 matmul <= 1.05x the fp32 peak (TF32 is off, even with
                    torch.backends.fp32_precision="tf32" set first); TF32 and bf16 in bands
 4. sync-fit        a whole train_images fit under CUDA sync-debug mode, resident and
                    host-fed: a bounded number of syncs per epoch
 5. resnet50        bf16 channels-last through the harness and a bare loop: harness/bare
                    >= 0.97, data stall <= 5%, counted FLOPs within 5% of the published
                    4.09 GMACs, MFU in a band, the partial:1 count (11.0 G)
 6. vit-b16         ViT-B/16 MFU in a band; its counted FLOPs against the published 17.56 GMACs
 7. compile         inductor once on a small model; then five backbones compiled in one
                    process, every fit capturing graphs
 8. host-fed        the data stall of a fit fed from the host (pinned copies, GPU augmentation)
 9. memory          the model peak recorded apart from the resident data; no growth across
                    three runs of one process; a forced OOM retried (data to the host, then
                    half the batch) down to an ok fit
10. executors       `--devices cuda:0,cuda:0` keyed and recorded as shared, `cuda:0` not;
                    `--devices cpu,cpu` on the GPU machine recorded as CPU runs
11. inference       ResNet-50 inference as `tlbench bench` times it (bf16, 224 px): batch-1
                    latency and batch-64 throughput in bands; the board's energy counter
                    (NVML) read, joules per 1,000 images in a band

Below compute capability 8.0 the low precision is fp16 (no bf16 tensor cores)
and the TF32 band is not checked.

THE BANDS ARE ESTIMATES: scaled from published A100 and RTX 3090 figures to an
H100, never measured by this project on a GPU. The first real run records
every figure beside its band (results/gpu-check-<device>.md); tighten the
bands to what it measured, and say so in that file. A band that fails on the
first run is a finding to look at, not a verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: the whole check's budget on one H100: the sum of the steps' budgets stays under it.
TOTAL_BUDGET_S = 480
#: torchvision's published multiply-adds per 224 px image (GFLOPS in its docs = GMACs).
RESNET50_GMACS, VIT_B16_GMACS = 4.09, 17.56


# --------------------------------------------------------------------------- bands


@dataclasses.dataclass(frozen=True)
class Band:
    """A pass band [lo, hi] (None: open) for one figure; `why` says where it comes from."""

    lo: float | None
    hi: float | None
    why: str

    def holds(self, value: float | None) -> bool:
        if value is None:
            return False
        return (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)

    def text(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "+inf" if self.hi is None else f"{self.hi:g}"
        return f"[{lo}, {hi}]"


#: Estimates, to be tightened on the first real run (see the module docstring).
#: Rates are fractions of this GPU's dense datasheet peak (`tlbench.timing.device_peak`).
BANDS: dict[str, Band] = {
    "other_gpu_processes": Band(0, 0, "a shared GPU makes every figure below wrong"),
    "peak_known": Band(1, 1, "MFU needs this GPU in peaks.PEAKS"),
    "cuda_tests_skipped": Band(0, 0, "on a GPU no CUDA test may skip"),
    "cuda_tests_passed": Band(5, None, "the CUDA tests of tests/ (at least the 5 known)"),
    "fp32_matmul_of_peak": Band(0.3, 1.05, "above 1.05x the fp32 peak only TF32 could go"),
    "tf32_matmul_of_peak": Band(0.35, 1.05, "A100: ~0.8 of TF32 peak at 8192^2 (estimate)"),
    "lowp_matmul_of_peak": Band(0.35, 1.05, "A100/H100: 0.6-0.8 of bf16 peak at 8192^2 (estimate)"),
    "fp32_tf32_read_back": Band(0, 0, "fp32 read back with TF32 on is a mislabelled run"),
    "syncs_per_epoch": Band(0, 6, "epoch start, loss read, eval read, eval sync (estimate)"),
    "harness_over_bare": Band(0.97, None, "issue 22: the harness costs at most 3%"),
    "data_stall_resident": Band(0, 0.05, "data on the GPU: gathering is ~free"),
    "flops_vs_published": Band(0.95, 1.05, "counted forward / torchvision's published GMACs"),
    "partial1_train_gflops": Band(10.8, 11.2, "ResNet-50 224 px, last stage trainable: 11.0"),
    "resnet50_mfu": Band(0.04, 0.30, "eager bf16 ResNet-50 ~2.5-3.5k img/s on H100 (estimate)"),
    "vit_mfu": Band(0.10, 0.55, "eager bf16 ViT-B/16 with SDPA (estimate)"),
    "compiled_graphs_each": Band(1, None, "every fit of a compiled grid captured a graph"),
    "data_stall_host_fed": Band(0, 0.15, "pinned copies + GPU augmentation keep up (estimate)"),
    "model_peak_below_peak": Band(1, 1, "model peak = peak - resident data, and > 0"),
    "growth_over_3_runs_mib": Band(None, 64, "no memory kept from one run to the next"),
    "oom_retry_ok": Band(1, 1, "a forced OOM ends in an ok fit"),
    "oom_data_moved_first": Band(1, 1, "the first retry keeps the batch, moves the data"),
    "shared_marked": Band(1, 1, "cuda:0,cuda:0 runs carry device_shared_by=2, cuda:0 not"),
    "cpu_workers_labelled_cpu": Band(1, 1, "--devices cpu,cpu records say cpu, fp32"),
    "resnet50_latency_ms": Band(0.5, 15, "eager bf16 ResNet-50, batch 1, H100: ~3-6 ms (estimate)"),
    "resnet50_infer_img_s": Band(3000, None, "eager bf16 forward, batch 64: above training's"),
    "energy_measured": Band(1, 1, "NVML's energy counter exists from Volta on"),
    "joules_per_1000_images": Band(1, 300, "~400 W at >= 3k img/s: <= ~130 J (estimate)"),
    "cpu_energy_reason": Band(1, 1, "no counter: a reason, never a figure"),
}


class Step:
    """One step's running state: its figures, their checks, and where it runs."""

    def __init__(self, name: str, gpu: bool, work: Path):
        self.name, self.gpu, self.work = name, gpu, work
        self.figures: dict[str, Any] = {}
        self.checks: list[dict[str, Any]] = []
        import torch

        self.device = torch.device("cuda" if gpu else "cpu")
        capability = torch.cuda.get_device_capability(0) if gpu else (0, 0)
        #: the low precision this GPU runs natively: bf16 from Ampere (8.0) on, else fp16.
        self.lowp = "bf16" if capability >= (8, 0) else "fp16"
        self.capability = capability

    def check(self, name: str, value: Any, band: str | None = None) -> None:
        """Record `value` against BANDS[band or name]."""
        b = BANDS[band or name]
        number = float(value) if isinstance(value, (int, float, bool)) else None
        self.checks.append({"figure": name, "value": value, "band": b.text(), "why": b.why,
                            "ok": b.holds(number)})  # fmt: skip

    def figure(self, **values: Any) -> None:
        self.figures.update(values)


# --------------------------------------------------------------------------- helpers


def _sync(device: Any) -> None:
    from tlbench.timing import synchronize

    synchronize(device)


def _rate(fn: Callable[[], Any], device: Any, reps: int, warm: int = 2) -> float:
    """Seconds per call of `fn`, after `warm` untimed calls (synchronised around the timing)."""
    for _ in range(warm):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / reps


def _images(n: int, size: int, classes: int = 10, seed: int = 0) -> Any:
    import torch

    from tlbench.data import ImageTensors

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return ImageTensors(images, torch.arange(n) % classes)


def _headless(name: str) -> tuple[Any, int]:
    """A torchvision model (random weights: nothing is downloaded) without its classifier."""
    import torch
    import torchvision
    from torch import nn

    torch.manual_seed(0)
    if name == "small_cnn":
        from tlbench.builtin.small_cnn import WIDTHS
        from tlbench.builtin.small_cnn_net import SmallCNN

        net = SmallCNN(WIDTHS)
        return net, net.num_features
    model = getattr(torchvision.models, name)()
    attr = "fc" if hasattr(model, "fc") else "heads" if hasattr(model, "heads") else "classifier"
    head = getattr(model, attr)
    width = next(m for m in head.modules() if isinstance(m, nn.Linear)).in_features
    setattr(model, attr, nn.Identity())
    return model, width


def _fit(step: Step, backbone: str, *, n: int, size: int, batch: int, epochs: int = 1,
         precision: str | None = None, store: int | None = None, **kwargs: Any) -> Any:  # fmt: skip
    """`train_images` on random images: (FitResult, model). kwargs: Execution's and the fit's."""
    from torch import nn

    from tlbench.engine import Execution, ImageClassifier, train_images
    from tlbench.plugin_types import Hyperparameters, Preprocessing

    ex_keys = {"compile", "channels_last"}
    ex = Execution(step.device, precision or ("fp32" if not step.gpu else step.lowp),
                   channels_last=kwargs.pop("channels_last", True),
                   compile=kwargs.pop("compile", False))  # fmt: skip
    assert not ex_keys & kwargs.keys()
    net, width = _headless(backbone)
    model = ImageClassifier(net, nn.Linear(width, 10), Preprocessing(resize=size, crop=size))
    data = _images(n, store or size)
    evalset = _images(max(batch, n // 4), store or size, seed=1)
    hp = Hyperparameters(
        epochs=epochs, batch_size=batch, lr=0.01, augment=kwargs.pop("augment", False)
    )
    fit = train_images(
        model, [{"params": list(model.parameters()), "lr": hp.lr}], data, evalset,
        num_classes=10, image_size=size, hp=hp, ex=ex, seed=0, **kwargs,
    )  # fmt: skip
    return fit, model


# --------------------------------------------------------------------------- the steps


def preflight(step: Step) -> None:
    import torch

    from tlbench.timing import device_identity, device_peak

    if not step.gpu:
        sample = "12345, python, 20000 MiB\n"
        step.figure(parsed_sample=_gpu_processes(sample, me=0),
                    cpu=device_identity(step.device)["key"],
                    precision_by_capability={"9.0": "bf16", "8.0": "bf16", "7.5": "fp16"})  # fmt: skip
        h100 = {
            "type": "cuda",
            "name": "NVIDIA H100 80GB HBM3",
            "multiprocessors": 132,
            "mig": None,
        }
        step.check("peak_known", int(device_peak(h100, "bf16").tflops is not None))
        return
    smi = shutil.which("nvidia-smi")
    text = ""
    if smi:
        text = subprocess.run(
            [smi, "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        ).stdout  # fmt: skip
    others = _gpu_processes(text, me=os.getpid())
    identity = device_identity(step.device)
    peak = device_peak(identity, step.lowp)
    step.figure(identity=identity, other_processes=others, peak=peak._asdict(),
                lowp=step.lowp, torch=torch.__version__, cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(), nvidia_smi=bool(smi))  # fmt: skip
    step.check("other_gpu_processes", len(others))
    step.check("peak_known", int(peak.tflops is not None))


def _gpu_processes(text: str, me: int) -> list[str]:
    """Other processes on the GPU, from `nvidia-smi --query-compute-apps` CSV lines."""
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and line.split(",")[0].strip() != str(me)
    ]


def cuda_tests(step: Step) -> None:
    argv = [sys.executable, "-m", "pytest", "tests", "-q", "-rs", "-p", "no:cacheprovider",
            "-k", "cuda"]  # fmt: skip
    if not step.gpu:
        argv.append("--collect-only")
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    tail = out.strip().splitlines()[-1] if out.strip() else ""
    step.figure(exit=done.returncode, summary=tail)
    if not step.gpu:
        collected = sum(1 for line in out.splitlines() if "::" in line)
        step.figure(collected=collected)
        step.check("cuda_tests_collected", collected, "cuda_tests_passed")
        return
    passed = _count(tail, "passed")
    step.check("cuda_tests_passed", passed if done.returncode == 0 else 0)
    step.check("cuda_tests_skipped", out.count("needs CUDA"))


def _count(summary: str, word: str) -> int:
    import re

    found = re.search(rf"(\d+) {word}", summary)
    return int(found.group(1)) if found else 0


def precision(step: Step) -> None:
    import torch

    from tlbench.engine import Execution
    from tlbench.timing import backend_state, device_identity, device_peak

    # The trap of issue 22.8: the process asked for TF32 everywhere before the run.
    torch.backends.fp32_precision = "tf32"
    cuda = torch.device("cuda")
    Execution(cuda, "fp32").apply_backends()  # flags only: no CUDA call
    state = backend_state()
    step.check("fp32_tf32_read_back", int(bool(state["tf32_matmul"] or state["tf32_cudnn"])))
    if not step.gpu:
        a = torch.randn(256, 256)
        seconds = _rate(lambda: a @ a, step.device, reps=5)
        step.figure(cpu_fp32_matmul_gflops=round(2 * 256**3 / seconds / 1e9, 2))
        return
    identity = device_identity(step.device)
    n = 8192
    a = torch.randn(n, n, device=step.device)
    names = ["fp32", step.lowp] + (["tf32"] if step.capability >= (8, 0) else [])
    for name in names:
        ex = Execution(step.device, name)
        ex.apply_backends()
        # The low precision's operands made once: a cast per call would be timed too.
        x = a.to(ex.autocast_dtype) if ex.autocast_dtype is not None else a
        with torch.no_grad():
            seconds = _rate(lambda x=x: x @ x, step.device, reps=10)
        tflops = 2 * n**3 / seconds / 1e12
        peak = device_peak(identity, name).tflops
        ratio = tflops / peak if peak else None
        step.figure(**{f"{name}_matmul_tflops": round(tflops, 1), f"{name}_peak_tflops": peak})
        band = "lowp_matmul_of_peak" if name in ("bf16", "fp16") else f"{name}_matmul_of_peak"
        step.check(f"{name}_matmul_of_peak", ratio and round(ratio, 3), band)


@contextlib.contextmanager
def _count_syncs(step: Step) -> Iterator[list[str]]:
    """Synchronising CUDA calls in the block (sync debug mode "warn"), one entry each."""
    import torch

    found: list[str] = []
    if not step.gpu:
        yield found
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found += [str(w.message)[:80] for w in caught if "synchroniz" in str(w.message)]


def sync_fit(step: Step) -> None:
    epochs = 3
    size, n, batch = (64, 512, 64) if step.gpu else (16, 24, 8)
    backbone = "resnet18" if step.gpu else "small_cnn"
    for where, on_device in (("resident", True), ("host_fed", False)):
        with _count_syncs(step) as syncs:
            fit, _ = _fit(step, backbone, n=n, size=size, batch=batch, epochs=epochs,
                          data_on_device=on_device)  # fmt: skip
        per_epoch = len(syncs) / epochs
        step.figure(**{f"{where}_syncs": len(syncs), f"{where}_resident_bytes": fit.resident_data_bytes,
                       f"{where}_sync_sites": sorted(set(syncs))[:8]})  # fmt: skip
        if step.gpu:
            # Warm-up and set-up syncs count too: the band is per measured epoch, generously.
            step.check(f"{where}_syncs_per_epoch", round(per_epoch, 2), "syncs_per_epoch")


def resnet50(step: Step) -> None:
    import torch
    import torchvision
    from torch import nn

    from tlbench.engine import Execution, TrainStep, make_optimizer
    from tlbench.plugin_types import Hyperparameters
    from tlbench.timing import device_identity, mfu, training_flops

    model = torchvision.models.resnet50()
    counts = training_flops(model, 224)
    step.check("resnet50_flops_vs_published", round(counts.forward / (2 * RESNET50_GMACS * 1e9), 4),
               "flops_vs_published")  # fmt: skip
    model.requires_grad_(False)
    model.layer4.requires_grad_(True)
    model.fc.requires_grad_(True)
    partial = training_flops(model, 224)
    step.figure(forward_gflops=counts.forward / 1e9, train_gflops=counts.train / 1e9,
                partial1_train_gflops=partial.train / 1e9,
                partial1_assumed_gflops=3 * partial.forward / 1e9)  # fmt: skip
    step.check("partial1_train_gflops", round(partial.train / 1e9, 3))
    # On a CPU the harness-against-bare path runs on the small CNN: the figures are not
    # checked there, only that the path works.
    backbone = "resnet50" if step.gpu else "small_cnn"
    size, batch, n = (224, 128, 128 * 10) if step.gpu else (32, 8, 16)
    fit, _ = _fit(step, backbone, n=n, size=size, batch=batch, epochs=2 if step.gpu else 1)
    cost = fit.cost()
    # The bare loop: the same model class, batch, dtype and memory format; no harness.
    ex = Execution(step.device, step.lowp if step.gpu else "fp32", channels_last=True)
    ex.apply_backends()
    bare, width = _headless(backbone)
    bare = ex.place(nn.Sequential(bare, nn.Linear(width, 10)))
    opt = make_optimizer([{"params": list(bare.parameters())}], Hyperparameters(), step.device)
    train_step = TrainStep(bare, opt, nn.CrossEntropyLoss(), ex)
    x = ex.to_input(torch.rand(batch, 3, size, size, device=step.device))
    y = torch.randint(0, 10, (batch,), device=step.device)
    seconds = _rate(
        lambda: train_step(x, y), step.device, reps=20 if step.gpu else 2, warm=3 if step.gpu else 1
    )
    bare_ips = batch / seconds
    harness_ips = cost.get("train_images_per_s")
    figures = mfu(counts.forward, harness_ips, device_identity(step.device), ex.precision,
                  train_flops_per_image=counts.train)  # fmt: skip
    step.figure(harness_images_per_s=harness_ips, bare_images_per_s=bare_ips,
                data_stall_fraction=cost.get("data_stall_fraction"), mfu=figures["mfu"],
                mfu_basis=figures["mfu_basis"], batch=batch, image_size=size,
                precision=ex.precision)  # fmt: skip
    if step.gpu:
        step.check("harness_over_bare", round(harness_ips / bare_ips, 3))
        step.check("data_stall_resident", round(cost["data_stall_fraction"], 3))
        step.check("resnet50_mfu", figures["mfu"] and round(figures["mfu"], 3))


def vit_b16(step: Step) -> None:
    import torch
    import torchvision
    from torch import nn

    from tlbench.engine import Execution, TrainStep, make_optimizer
    from tlbench.plugin_types import Hyperparameters
    from tlbench.timing import device_identity, mfu, training_flops

    torch.manual_seed(0)
    model = torchvision.models.vit_b_16()
    counts = training_flops(model, 224)
    step.check("vit_flops_vs_published", round(counts.forward / (2 * VIT_B16_GMACS * 1e9), 4),
               "flops_vs_published")  # fmt: skip
    step.figure(forward_gflops=counts.forward / 1e9, train_gflops=counts.train / 1e9)
    if not step.gpu:
        return
    batch = 64
    ex = Execution(step.device, step.lowp, channels_last=False)
    ex.apply_backends()
    model = ex.place(model)
    opt = make_optimizer([{"params": list(model.parameters())}], Hyperparameters(), step.device)
    train_step = TrainStep(model, opt, nn.CrossEntropyLoss(), ex)
    x = torch.rand(batch, 3, 224, 224, device=step.device)
    y = torch.randint(0, 1000, (batch,), device=step.device)
    ips = batch / _rate(lambda: train_step(x, y), step.device, reps=15, warm=3)
    figures = mfu(counts.forward, ips, device_identity(step.device), ex.precision,
                  train_flops_per_image=counts.train)  # fmt: skip
    step.figure(images_per_s=ips, mfu=figures["mfu"], mfu_basis=figures["mfu_basis"], batch=batch)
    step.check("vit_mfu", figures["mfu"] and round(figures["mfu"], 3))


def compile_step(step: Step) -> None:
    import torch

    from tlbench import execution

    if step.gpu:  # inductor, for real, once: the code generation path works here
        fit, _ = _fit(step, "small_cnn", n=256, size=64, batch=64, compile=True)
        step.figure(inductor_small_cnn_graphs=fit.compiled_graphs,
                    inductor_warmup_seconds=round(fit.warmup_seconds, 1))  # fmt: skip
        step.check("inductor_graphs", fit.compiled_graphs, "compiled_graphs_each")
    # Five backbones in one process: what issue 22.1 broke is dynamo's graph capture
    # per fit (its recompile limit), which the "eager" backend shows without
    # minutes of code generation per backbone.
    execution.COMPILE_BACKEND = "eager"
    names = ["small_cnn", "resnet18", "mobilenet_v3_small", "efficientnet_b0", "resnet34"]
    if not step.gpu:
        names = names[:2]  # the five run in tests/test_gpu_compile.py
    graphs = {}
    for name in names:
        fit, _ = _fit(step, name, n=16, size=32, batch=8, compile=True)
        graphs[name] = fit.compiled_graphs
    step.figure(eager_backend_graphs=graphs)
    step.check("fewest_graphs_of_a_fit", min(graphs.values()), "compiled_graphs_each")
    torch._dynamo.reset()


def host_fed(step: Step) -> None:
    size, store, batch, n = (224, 256, 128, 1024) if step.gpu else (16, 20, 8, 16)
    fit, _ = _fit(step, "resnet50" if step.gpu else "small_cnn", n=n, size=size, store=store,
                  batch=batch, augment=True, data_on_device=False)  # fmt: skip
    cost = fit.cost()
    step.figure(data_stall_fraction=cost.get("data_stall_fraction"),
                train_images_per_s=cost.get("train_images_per_s"),
                resident_data_bytes=fit.resident_data_bytes)  # fmt: skip
    if step.gpu:
        step.check("data_stall_host_fed", round(cost["data_stall_fraction"], 3))


def memory(step: Step) -> None:
    import torch

    from tlbench.engine import Attempt, next_attempt_after_oom
    from tlbench.timing import PeakMemory

    size, n, batch = (64, 512, 64) if step.gpu else (16, 16, 8)
    peaks = PeakMemory(step.device)
    peaks.reset()
    fit, _ = _fit(step, "resnet18" if step.gpu else "small_cnn", n=n, size=size, batch=batch)
    read = peaks.read(resident_bytes=fit.resident_data_bytes)
    step.figure(peak=read)
    if step.gpu:
        model_peak = read["model_peak_memory_bytes"]
        step.check("model_peak_below_peak",
                   int(0 < model_peak < read["peak_memory_bytes"] or fit.resident_data_bytes == 0))  # fmt: skip
        after = []
        for _ in range(3):
            _fit(step, "resnet18", n=n, size=size, batch=batch)
            gc.collect()
            torch.cuda.empty_cache()
            after.append(torch.cuda.memory_allocated())
        step.figure(allocated_after_runs=after)
        step.check("growth_over_3_runs_mib", round((after[-1] - after[0]) / 2**20, 1))
    # A forced OOM: the protocol the trial's retry follows, down to an ok fit.
    attempt, tried, fit = Attempt(512 if step.gpu else 8), [], None
    limit = None
    if step.gpu:
        total = torch.cuda.get_device_properties(0).total_memory
        limit = min(1.0, 8 * 2**30 / total)  # 8 GiB: ResNet-50 at 224 px, batch 512 does not fit
        torch.cuda.set_per_process_memory_fraction(limit)
    try:
        while attempt is not None and fit is None:
            tried.append(dataclasses.asdict(attempt))
            try:
                if step.gpu:
                    fit, _ = _fit(step, "resnet50", n=1024, size=224, batch=attempt.batch_size,
                                  data_on_device=attempt.data_on_device)  # fmt: skip
                else:
                    fit = _cpu_oom_fit(attempt)
            except Exception as exc:
                from tlbench.engine import is_out_of_memory

                if not is_out_of_memory(exc):
                    raise
                attempt = next_attempt_after_oom(exc, attempt)
            gc.collect()
            if step.gpu:
                torch.cuda.empty_cache()
    finally:
        if step.gpu:
            torch.cuda.set_per_process_memory_fraction(1.0)
    step.figure(oom_attempts=tried, memory_fraction=limit)
    step.check("oom_retry_ok", int(fit is not None))
    moved = len(tried) > 1 and tried[1]["batch_size"] == tried[0]["batch_size"]
    step.check("oom_data_moved_first", int(moved and not tried[1]["data_on_device"]))


def _cpu_oom_fit(attempt: Any) -> Any:
    """On a CPU: a model that runs out of memory at batch 8 or more, data "on the device"."""
    from unittest import mock

    import torch
    from torch import nn

    from tlbench import memory
    from tlbench.engine import Execution, ImageClassifier, train_images
    from tlbench.plugin_types import Hyperparameters, Preprocessing

    class Big(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training and x.shape[0] >= 8:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return self.conv(x).mean((2, 3))

    model = ImageClassifier(Big(), nn.Linear(4, 2), Preprocessing(resize=8, crop=8))
    data = _images(16, 8, classes=2)
    hp = Hyperparameters(epochs=1, batch_size=attempt.batch_size, lr=0.01)
    with mock.patch.object(memory, "fits_on_device", lambda n, d: True):
        return train_images(
            model, [{"params": list(model.parameters()), "lr": hp.lr}], data, data,
            num_classes=2, image_size=8, hp=hp, ex=Execution(torch.device("cpu")), seed=0,
            data_on_device=attempt.data_on_device,
        )  # fmt: skip


def executors(step: Step) -> None:
    from tlbench.config import make_config
    from tlbench.plan import execution_settings

    on_cpus = execution_settings(
        make_config(executor="devices", devices=["cpu", "cpu"], device="auto")
    )
    step.figure(cpu_workers_settings=on_cpus)
    if not step.gpu:
        step.check("cpu_workers_labelled_cpu",
                   int(on_cpus["device"] == "cpu" and on_cpus["precision"] == "fp32"))  # fmt: skip
        return
    alone = execution_settings(make_config(executor="devices", devices=["cuda:0"]))
    shared = execution_settings(make_config(executor="devices", devices=["cuda:0", "cuda:0"]))
    records = _grid(step, "cuda:0,cuda:0", seeds="0,1")
    marked = [r["config"].get("device_shared_by") for r in records if r.get("status") == "ok"]
    step.figure(shared_settings=shared, shared_records=marked)
    step.check("shared_marked", int("device_shared_by" not in alone
                                    and shared.get("device_shared_by") == 2
                                    and marked == [2, 2]))  # fmt: skip
    cpu_records = [r for r in _grid(step, "cpu,cpu", seeds="0") if r.get("status") == "ok"]
    labels = [(r["config"]["device"], r["config"]["precision"],
               r["environment"]["device_name"]) for r in cpu_records]  # fmt: skip
    import torch

    gpu_name = torch.cuda.get_device_name(0)
    step.figure(cpu_worker_records=labels)
    step.check("cpu_workers_labelled_cpu",
               int(bool(labels) and all(d == "cpu" and p == "fp32" and n != gpu_name
                                        for d, p, n in labels)))  # fmt: skip


def inference(step: Step) -> None:
    """`tlbench bench`'s timing of ResNet-50 and the energy meter, on the GPU."""
    from tlbench.engine import Execution
    from tlbench.inference import InferenceSettings, bench_backbone
    from tlbench.plugins import Plugins

    backbone = Plugins().backbones.get("resnet50" if step.gpu else "small_cnn")
    size, batch = (224, 64) if step.gpu else (32, 4)
    ex = Execution.resolve(step.device, step.lowp if step.gpu else "fp32")
    found = bench_backbone(
        backbone, image_size=size, batch=batch, ex=ex,
        settings=InferenceSettings(repeats=30, budget_seconds=2.0),
    )  # fmt: skip
    step.figure(**{k: v for k, v in found.items() if not isinstance(v, dict)})
    if not step.gpu:
        step.check("cpu_energy_reason", int(found["energy_joules_per_1000"] is None
                                            and bool(found.get("energy_reason"))))  # fmt: skip
        return
    step.check("resnet50_latency_ms", found["latency_ms_p50"])
    step.check("resnet50_infer_img_s", found["throughput_images_per_s"])
    step.check("energy_measured", int(found.get("energy_source") == "nvml"))
    step.check("joules_per_1000_images", found["energy_joules_per_1000"])


def _grid(step: Step, devices: str, seeds: str) -> list[dict[str, Any]]:
    out = step.work / f"grid-{devices.replace(',', '_').replace(':', '')}.jsonl"
    argv = [sys.executable, "-m", "tlbench.cli", "run", "--executor", "devices",
            "--devices", devices, "--datasets", "synthetic", "--backbones", "small_cnn",
            "--strategies", "scratch", "--seeds", seeds, "--epochs", "1", "--image-size", "32",
            "--out", str(out), "--cache-dir", str(step.work / "cache"), "--force", "--plain"]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    if not out.exists():
        raise RuntimeError(
            f"tlbench run --devices {devices} wrote no records: {done.stderr[-800:]}"
        )
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


#: (name, budget in seconds on one H100, function). The budgets sum to <= TOTAL_BUDGET_S.
STEPS: list[tuple[str, int, Callable[[Step], None]]] = [
    ("preflight", 20, preflight),
    ("cuda-tests", 60, cuda_tests),
    ("precision", 30, precision),
    ("sync-fit", 40, sync_fit),
    ("resnet50", 60, resnet50),
    ("vit-b16", 40, vit_b16),
    ("compile", 85, compile_step),
    ("host-fed", 30, host_fed),
    ("memory", 40, memory),
    ("executors", 50, executors),
    ("inference", 25, inference),
]
assert sum(budget for _, budget, _ in STEPS) <= TOTAL_BUDGET_S
#: what each step checks on a GPU (its CPU part, in a dry run, runs what needs no GPU).
WHAT = {
    "preflight": "no other GPU process, identity, peak entry | CPU: peak lookup, nvidia-smi parse",
    "cuda-tests": "the CUDA tests pass, none skipped | CPU: collected (>= 5)",
    "precision": "fp32 <= 1.05x peak, TF32/low-p in bands | CPU: fp32 read back with tf32 set first",
    "sync-fit": "syncs per epoch, resident and host-fed | CPU: both fits run",
    "resnet50": "harness/bare, stall, MFU | CPU: FLOPs vs 4.09 GMACs, partial:1 = 11.0 G",
    "vit-b16": "MFU in band | CPU: FLOPs vs 17.56 GMACs",
    "compile": "inductor once, five backbones each capture | CPU: two backbones capture",
    "host-fed": "data stall of a host-fed fit | CPU: the fit runs",
    "memory": "model peak, no growth, OOM retried to ok | CPU: the OOM protocol to an ok fit",
    "executors": "shared GPU marked, cpu,cpu labelled cpu | CPU: cpu,cpu planned as cpu",
    "inference": "ResNet-50 latency, throughput, NVML joules | CPU: a bench, energy's reason",
}


# --------------------------------------------------------------------------- one step, in its process


def run_step(name: str, gpu: bool, result: Path, work: Path) -> int:
    """Run step `name` in this process and write its result (figures, checks) to `result`."""
    fn = next(f for n, _, f in STEPS if n == name)
    t0 = time.perf_counter()
    step = Step(name, gpu, work)
    out: dict[str, Any] = {"step": name}
    try:
        fn(step)
        failed = [c["figure"] for c in step.checks if not c["ok"]]
        out["status"] = "failed" if failed else "ok"
        if failed:
            out["reason"] = "out of band: " + ", ".join(failed)
    except Exception as exc:  # a failed step is reported; the driver runs the others
        out.update(status="failed", reason=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc()[-3000:])  # fmt: skip
    out.update(figures=step.figures, checks=step.checks, seconds=round(time.perf_counter() - t0, 1))
    result.write_text(json.dumps(out, indent=1, default=str))
    return 0


# --------------------------------------------------------------------------- the driver


def drive(gpu: bool, only: list[str], out_dir: Path | None) -> tuple[list[dict[str, Any]], float]:
    """Each step in a fresh process under its budget; their results, in order, and the seconds."""
    work = Path(tempfile.mkdtemp(prefix="tlbench-gpu-check-"))
    results = []
    started = time.perf_counter()
    for name, budget, _ in STEPS:
        if only and name not in only:
            continue
        result = work / f"{name}.json"
        argv = [sys.executable, str(Path(__file__).resolve()), "--step", name,
                "--result", str(result), "--work", str(work)] + ([] if gpu else ["--cpu"])  # fmt: skip
        print(f"[{name}] budget {budget} s ...", flush=True)
        t0 = time.perf_counter()
        done, log = _run_within(argv, budget)
        seconds = round(time.perf_counter() - t0, 1)
        if done is None:
            entry = {"step": name, "status": "failed", "reason": f"over its budget of {budget} s"}
        elif result.exists():
            entry = json.loads(result.read_text())
        else:
            entry = {
                "step": name,
                "status": "failed",
                "reason": f"exit {done.returncode}: {log[-600:]}",
            }
        entry.update(budget_s=budget, wall_s=seconds, log_tail=log[-1500:])
        results.append(entry)
        bad = [
            f"{c['figure']}={c['value']} not in {c['band']}"
            for c in entry.get("checks", [])
            if not c["ok"]
        ]
        checks = len(entry.get("checks", []))
        shown = (
            "; ".join(bad)
            or entry.get("reason")
            or (f"{checks} check(s) in band" if checks else "ran (its bands need a GPU)")
        )
        print(f"[{name}] {entry['status']} in {seconds} s of {budget}: {shown}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return results, time.perf_counter() - started


def _run_within(argv: list[str], budget: int) -> tuple[Any, str]:
    """Run `argv` in a session of its own; past `budget` seconds kill the whole session.

    A step's own children (pytest, a grid's workers) go with it, so an overrun
    never leaves a process on the GPU beside the next step. (None, output) on a timeout.
    """
    import signal

    child = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)  # fmt: skip
    try:
        out, _ = child.communicate(timeout=budget)
        return child, out
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
        return None, _text(out)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


def _provenance(gpu: bool) -> dict[str, Any]:
    import torch

    from tlbench.timing import device_identity, git_sha

    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True,
                           text=True).stdout.strip()  # fmt: skip
    device = torch.device("cuda" if gpu else "cpu")
    return {
        "device_identity": device_identity(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "git_sha": git_sha(),
        "git_dirty": bool(dirty),
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def write_report(results: list[dict[str, Any]], provenance: dict[str, Any], out: Path,
                 seconds: float, dry_run: bool) -> Path:  # fmt: skip
    ident = provenance["device_identity"]
    name = f"gpu-check-{'dry-run-' if dry_run else ''}{ident['slug']}"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(
        json.dumps({"provenance": provenance, "steps": results}, indent=1, default=str) + "\n"
    )
    lines = [
        f"# GPU check: {ident['name']}" + (" (dry run: CPU parts only)" if dry_run else ""),
        "",
        f"- {provenance['time']}, {seconds:.0f} s in all (budget {TOTAL_BUDGET_S} s)",
        f"- Device: {ident['key']} (compute capability {ident['compute_capability']}, MIG {ident['mig']})",
        f"- torch {provenance['torch']}, CUDA {provenance['cuda']}, cuDNN {provenance['cudnn']}, "
        f"Python {provenance['python']}",
        f"- tlbench {provenance['git_sha']}" + (" (uncommitted changes)" if provenance["git_dirty"] else ""),
        "- The bands are estimates from published A100/RTX 3090 figures, to be tightened to "
        "this run's figures (benchmarks/gpu_check.py, BANDS).",
        "",
        "| step | status | seconds / budget | checks |",
        "|---|---|---|---|",
    ]  # fmt: skip
    for r in results:
        checks = ", ".join(f"{c['figure']}={c['value']} {c['band']}{'' if c['ok'] else ' FAIL'}"
                           for c in r.get("checks", []))  # fmt: skip
        text = (checks or r.get("reason") or "").replace("|", "/").replace("\n", " ")
        lines.append(f"| {r['step']} | {r['status']} | {r['wall_s']} / {r['budget_s']} | {text} |")
    for r in results:
        lines += [
            "",
            f"## {r['step']}",
            "",
            "```",
            json.dumps(r.get("figures", {}), indent=1, default=str),
            "```",
        ]
        if r.get("reason"):
            lines += ["", f"Reason: {r['reason']}"]
        if r.get("traceback"):
            lines += ["", "```", r["traceback"], "```"]
    path = out / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="on any machine: list the steps and budgets, run each step's CPU part")  # fmt: skip
    parser.add_argument("--only", action="append", default=[], choices=[n for n, _, _ in STEPS],
                        help="run only this step (repeatable)")  # fmt: skip
    parser.add_argument(
        "--out", help="report folder (default results/; a dry run writes none unless given)"
    )
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        return run_step(args.step, not args.cpu, Path(args.result), Path(args.work))
    total = sum(budget for _, budget, _ in STEPS)
    if args.dry_run:
        print(
            f"GPU check: {len(STEPS)} steps, {total} s of budget in all (limit {TOTAL_BUDGET_S} s)"
        )
        for i, (name, budget, _) in enumerate(STEPS, 1):
            print(f"  {i:2d}. {name:<11} {budget:4d} s  {WHAT[name]}")
        print(
            "Bands are estimates, to be tightened on the first real GPU run. CPU parts:\n",
            flush=True,
        )
    else:
        import torch

        if not torch.cuda.is_available():
            why = "this PyTorch has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            print(f"gpu_check: no CUDA device ({why}). This check needs an NVIDIA GPU; "
                  "`--dry-run` lists its steps and runs their CPU parts.", file=sys.stderr)  # fmt: skip
            return 2
    results, seconds = drive(not args.dry_run, args.only, None)
    failed = [r["step"] for r in results if r["status"] != "ok"]
    out = Path(args.out) if args.out else (None if args.dry_run else REPO / "results")
    if out is not None:
        path = write_report(results, _provenance(not args.dry_run), out, seconds, args.dry_run)
        print(f"report: {path}")
    print(f"{len(results) - len(failed)} of {len(results)} steps ok in {seconds:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
