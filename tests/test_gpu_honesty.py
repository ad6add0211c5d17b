"""Honest numbers on a GPU, checked where there is none (issue 12).

Each test fakes what only a GPU would show (a device name, a compute
capability, an allocation failure, a resident dataset) or records the order in
which things happen. What only a real GPU can show is in benchmarks/gpu_check.py,
which runs the tests here whose names say "cuda" on a machine that has one.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch
import torchvision
from torch import nn

from tlbench import engine, image_fit, memory, timing
from tlbench.config import ConfigError, make_config
from tlbench.data import ImageTensors
from tlbench.engine import (
    Execution,
    FitResult,
    ImageClassifier,
    TrainStep,
    evaluate_logits,
    is_out_of_memory,
    make_optimizer,
    train_images,
)
from tlbench.errors import TlbenchError
from tlbench.plugin_types import Hyperparameters, Preprocessing
from tlbench.timing import (
    PeakMemory,
    backend_state,
    device_identity,
    device_peak,
    forward_flops,
    mfu,
    resolve_device,
)

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


# --------------------------------------------------------------------------- 1, 2: FLOPs


@pytest.mark.parametrize(
    ("build", "weights"),
    [
        (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
        (torchvision.models.vit_b_16, torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1),
    ],
    ids=["resnet50", "vit_b_16"],
)
def test_flops_match_torchvision_published_figures(build, weights):
    """torchvision's model docs list GFLOPS = 10^9 multiply-adds at 224 px (4.09 and 17.56).

    The model is in eval mode, as after an evaluation: the count is still that
    of training (in eval + no_grad, ViT's attention takes the fused path the
    counter scores as zero: 11.3 instead of 17.6 GMACs).
    """
    torch.manual_seed(0)
    model = build().eval()  # random weights: nothing is downloaded
    flops = forward_flops(model, 224, CPU)
    published_macs = weights.meta["_ops"] * 1e9
    assert flops == pytest.approx(2 * published_macs, rel=0.002)
    assert not model.training  # the caller's mode is kept


def _bn_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(2)
    )


def test_counting_flops_leaves_weights_statistics_and_random_state_alone():
    model = _bn_net()
    model(torch.rand(2, 3, 8, 8))  # materialise the lazy layer
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    assert forward_flops(model, 8, CPU) == 2 * (6 * 6 * 4 * 27 + 4 * 36 * 2)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm stats included
    assert torch.equal(torch.get_rng_state(), rng)  # dropout drew nothing from the run's stream


def test_flops_are_counted_wherever_the_model_lives():
    """Issue 12.1: a count asked for "cuda" on a model still on the CPU is not a None."""
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten())
    assert forward_flops(conv, 8, CUDA) == 2 * 8 * 8 * 4 * 27


class _HostTensorNet(nn.Module):
    """A plain tensor attribute (not a buffer) cannot be swapped for a meta tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(5)
        self.weight = torch.ones(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.mean((2, 3)).repeat(1, 2)[:, :5]) @ self.weight


def test_a_model_meta_tensors_cannot_run_is_counted_on_its_own_device_and_restored():
    model = _HostTensorNet().train()
    stats = model.bn.running_mean.clone(), model.bn.num_batches_tracked.clone()
    assert forward_flops(model, 4, CUDA) == 2 * 5 * 3
    assert torch.equal(model.bn.running_mean, stats[0])
    assert torch.equal(model.bn.num_batches_tracked, stats[1])


# --------------------------------------------------------------------------- 3: precision


@pytest.fixture
def backends():
    """Put the process's TF32 and cuDNN flags back after a test that sets them."""
    from test_gpu_precision import saved_precision_flags

    with saved_precision_flags():
        yield


@pytest.mark.parametrize(("precision", "tf32"), [("fp32", False), ("tf32", True), ("bf16", False)])
def test_precision_sets_and_records_tf32_and_cudnn_benchmark(backends, precision, tf32):
    """fp32 is true fp32: PyTorch's default runs cuDNN convolutions in TF32."""
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default
    ex = Execution(CUDA, precision, cudnn_benchmark=True)
    ex.apply_backends()  # flags only: no CUDA call
    assert backend_state() == {"tf32_matmul": tf32, "tf32_cudnn": tf32, "cudnn_benchmark": True}
    assert ex.to_dict() == {
        "device": "cuda",
        "precision": precision,
        "memory_format": "contiguous",
        "compile": False,
        "tf32": tf32,
        "cudnn_benchmark": True,
    }


def test_a_run_on_cuda_index_n_has_the_settings_of_cuda():
    """Which GPU of a machine ran a run is the executor's choice, not part of its key."""
    assert Execution(torch.device("cuda:3"), "bf16").to_dict() == Execution(CUDA, "bf16").to_dict()
    assert "tf32" not in Execution(CPU).to_dict()  # CPU keys are what they were


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16"), ((7, 0), "fp16")],
)
def test_auto_precision_is_bf16_only_where_the_gpu_runs_it_natively(
    monkeypatch, capability, expected
):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert Execution.resolve(CUDA, "auto").precision == expected
    assert Execution.resolve(CPU, "auto").precision == "fp32"


def test_tf32_is_refused_where_it_cannot_run(monkeypatch):
    with pytest.raises(ValueError, match="tf32 is a CUDA setting"):
        Execution.resolve(CPU, "tf32")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    with pytest.raises(ValueError, match=r"8\.0 or newer"):
        Execution.resolve(CUDA, "tf32")
    with pytest.raises(ValueError, match="precision must be auto, fp32, tf32, bf16, fp16"):
        Execution.resolve(CPU, "fp8")


def test_config_and_flags_take_every_precision_and_device_form():
    for precision in ("auto", "fp32", "tf32", "bf16", "fp16"):
        assert make_config(precision=precision).precision == precision
    for device in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert make_config(device=device).device == device
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda, cuda:N"):
        make_config(device="gpu")
    with pytest.raises(ConfigError, match="precision must be one of"):
        make_config(precision="fp64")


def test_fp16_steps_through_a_gradient_scaler_that_skips_an_overflow():
    """An inf gradient in fp16 skips the update (and lowers the scale) instead of ruining weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    hp = Hyperparameters(optimizer="sgd", lr=0.1)
    step = TrainStep(model, make_optimizer([{"params": list(model.parameters())}], hp),
                     nn.CrossEntropyLoss(), Execution(CPU, "fp16"))  # fmt: skip
    assert step.scaler is not None and step.autocast
    before = [p.detach().clone() for p in model.parameters()]
    scale = step.scaler.get_scale()
    x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
    step(torch.full_like(x, float("inf")), y)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert step.scaler.get_scale() < scale
    step(x, y)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_optimisers_use_fused_kernels_on_cuda():
    params = [nn.Parameter(torch.randn(3, 3)), nn.Parameter(torch.randn(3))]
    for name in ("adamw", "sgd"):
        hp = Hyperparameters(optimizer=name)
        on_gpu = make_optimizer([{"params": params}], hp, CUDA)
        assert on_gpu.defaults["fused"] is True, name
        assert not make_optimizer([{"params": params}], hp, CPU).defaults.get("fused")


# --------------------------------------------------------------------------- 4: device identity


def _fake_gpu(monkeypatch, name: str, memory_gib: float, sms: int, capability=(9, 0)) -> None:
    props = SimpleNamespace(
        name=name, total_memory=int(memory_gib * 2**30), major=capability[0],
        minor=capability[1], multi_processor_count=sms, uuid="GPU-1234",
    )  # fmt: skip
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_device_identity_names_the_gpu_model_not_just_cuda(monkeypatch):
    _fake_gpu(monkeypatch, "NVIDIA H100 80GB HBM3", 79.1, 132)
    h100 = device_identity(torch.device("cuda:1"))
    assert h100["name"] == "NVIDIA H100 80GB HBM3" and h100["compute_capability"] == "9.0"
    assert h100["key"] == "cuda/NVIDIA H100 80GB HBM3/79GiB"
    assert h100["slug"] == "nvidia-h100-80gb-hbm3" and h100["mig"] is None
    assert h100["index"] == 1  # recorded, but not in the key
    _fake_gpu(monkeypatch, "NVIDIA A100-SXM4-80GB", 79.2, 108, (8, 0))
    assert device_identity(CUDA)["key"] != h100["key"]


def test_a_mig_slice_is_its_own_device(monkeypatch):
    _fake_gpu(monkeypatch, "NVIDIA A100-SXM4-80GB MIG 1g.10gb", 9.5, 14, (8, 0))
    mig = device_identity(CUDA)
    assert mig["mig"] == "1g.10gb" and mig["key"] == "cuda/NVIDIA A100-SXM4-80GB MIG 1g.10gb/10GiB"
    _fake_gpu(monkeypatch, "NVIDIA A100-SXM4-80GB", 19.5, 28, (8, 0))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-6f2e0c2a-6c6c-5b8e-9d1e-3e0b1a2c3d4e")
    assert device_identity(CUDA)["mig"] == "MIG"


def test_cpu_identity_is_the_cpu_model():
    cpu = device_identity(CPU)
    assert cpu["type"] == "cpu" and cpu["name"] not in ("", "cpu", "x86_64")
    assert cpu["key"] == f"cpu/{cpu['name']}" and cpu["total_memory_bytes"] > 0
    assert timing.environment(CPU, {})["device_identity"] == cpu


def test_resolve_device_forms_and_clear_errors(monkeypatch):
    assert resolve_device("cpu") == CPU
    with pytest.raises(TlbenchError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(TlbenchError, match="MPS is not available"):
        resolve_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(TlbenchError, match=r"only 2 CUDA device\(s\) are visible.*cuda:0..cuda:1"):
        resolve_device("cuda:2")


# --------------------------------------------------------------------------- 5: peaks and MFU


def _gpu(name: str, sms: int | None = None, mig: str | None = None) -> dict:
    return {"type": "cuda", "name": name, "multiprocessors": sms, "mig": mig}


@pytest.mark.parametrize(
    ("name", "precision", "tflops", "entry"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.5, "H100 SXM"),  # the SXM part's own name
        ("NVIDIA H100 PCIe", "bf16", 756.5, "H100 PCIe"),
        ("NVIDIA H100 NVL", "bf16", 835.5, "H100 NVL"),
        ("NVIDIA H200", "bf16", 989.5, "H200 SXM"),
        ("NVIDIA H200 NVL", "bf16", 835.5, "H200 NVL"),  # not the SXM's 989
        ("NVIDIA GH200 480GB", "bf16", 989.5, "GH200"),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0, "A100"),
        ("NVIDIA A100 80GB PCIe", "tf32", 156.0, "A100"),
        ("NVIDIA A100-SXM4-40GB", "fp32", 19.5, "A100"),  # true fp32: CUDA cores
        ("NVIDIA L40S", "bf16", 362.05, "L40S"),
        ("NVIDIA L40", "bf16", 181.05, "L40"),
        ("NVIDIA L4", "fp16", 121.0, "L4"),
        ("NVIDIA A10", "bf16", 125.0, "A10"),
        ("NVIDIA GeForce RTX 4090", "bf16", 165.2, "RTX 4090"),
        ("NVIDIA GeForce RTX 3090", "fp16", 71.0, "RTX 3090"),
        ("Tesla T4", "fp16", 65.0, "T4"),
        ("Tesla V100-SXM2-16GB", "fp16", 125.0, "V100 SXM2"),
        ("Tesla V100-PCIE-32GB", "fp16", 112.0, "V100 PCIe"),
    ],
)
def test_peak_table_matches_real_device_names(name, precision, tflops, entry):
    peak = device_peak(_gpu(name), precision)
    assert (peak.tflops, peak.entry) == (tflops, entry)
    assert f"dense {precision}" in peak.reason


@pytest.mark.parametrize(
    ("identity", "precision", "why"),
    [
        (_gpu("Tesla T4"), "bf16", "no bf16 tensor cores"),
        (_gpu("Tesla V100-SXM2-32GB"), "bf16", "no bf16 tensor cores"),
        (_gpu("Tesla V100-SXM2-32GB"), "tf32", "no TF32"),
        (_gpu("NVIDIA A100-SXM4-80GB MIG 3g.40gb", mig="3g.40gb"), "bf16", "MIG slice"),
        (_gpu("NVIDIA H100 80GB HBM3", sms=66), "bf16", "66 of the 132 multiprocessors"),
        (_gpu("NVIDIA A10G"), "bf16", "not in tlbench's peak table"),
        (_gpu("NVIDIA H20"), "bf16", "not in tlbench's peak table"),  # not an H200
        (_gpu("NVIDIA GeForce RTX 3090 Ti"), "bf16", "not in tlbench's peak table"),
        ({"type": "cpu", "name": "AMD EPYC"}, "fp32", "no peak-FLOPs table for cpu"),
    ],
)
def test_no_peak_rather_than_a_wrong_one(identity, precision, why):
    peak = device_peak(identity, precision)
    assert peak.tflops is None and why in peak.reason


def test_mfu_is_taken_against_the_precisions_peak():
    h100 = _gpu("NVIDIA H100 80GB HBM3", sms=132)
    # 4.1 GFLOPs forward x 3 for training x 20000 img/s = 246 TFLOP/s of 989.5.
    out = mfu(4.1e9, 20_000, h100, "bf16")
    assert out["mfu"] == 3 * 4.1e9 * 20_000 / 989.5e12  # exactly: no fudge in the divisor
    assert out["mfu_peak_tflops"] == 989.5 and "dense bf16" in out["mfu_basis"]
    assert out["mfu_basis"].endswith("training FLOPs assumed 3x forward (no counted figure)")
    assert mfu(4.1e9, 2_000, h100, "fp32")["mfu"] == pytest.approx(3 * 4.1e9 * 2_000 / 67e12)
    t4 = mfu(4.1e9, 500, _gpu("Tesla T4"), "bf16")
    assert t4["mfu"] is None and "no bf16 tensor cores" in t4["mfu_basis"]
    peak = device_peak(h100, "bf16").reason
    for flops, images_per_s in ((None, 500), (4.1e9, None), (4.1e9, 0.0)):
        unmeasured = mfu(flops, images_per_s, h100, "bf16")
        assert unmeasured == {
            "mfu": None,
            "mfu_peak_tflops": 989.5,
            "mfu_basis": f"{peak}; no FLOP count or no measured throughput",
            "train_flops_per_image": None,
        }


# --------------------------------------------------------------------------- 6: warm-up


class _Recorder(nn.Module):
    """A tiny classifier that logs each forward's (phase, batch) and pays a one-off cost per shape."""

    def __init__(self, log: list, first_call_seconds: float = 0.0) -> None:
        super().__init__()
        self.log, self.first_call_seconds, self.seen = log, first_call_seconds, set()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = ("train" if self.training else "eval", x.shape[0])
        self.log.append(shape)
        if shape not in self.seen:  # autotuning / compilation of a new shape
            self.seen.add(shape)
            time.sleep(self.first_call_seconds)
        return self.bn(self.conv(x)).mean((2, 3))


def _recorded_fit(log: list, first_call_seconds: float = 0.0, **kw) -> FitResult:
    torch.manual_seed(0)
    model = ImageClassifier(
        _Recorder(log, first_call_seconds), nn.Linear(4, 3), Preprocessing(resize=10, crop=8)
    )
    hp = Hyperparameters(epochs=2, batch_size=4, lr=0.05)
    g = torch.Generator().manual_seed(0)
    train = ImageTensors(torch.randint(0, 256, (10, 3, 10, 10), dtype=torch.uint8, generator=g),
                         torch.arange(10) % 3)  # fmt: skip
    evalset = ImageTensors(train.images[:9], train.labels[:9])
    return train_images(
        model, [{"params": list(model.parameters()), "lr": hp.lr}], train, evalset,
        num_classes=3, image_size=8, hp=hp, ex=Execution(CPU), seed=0, **kw,
    )  # fmt: skip


def test_the_clock_starts_after_every_shape_was_seen(monkeypatch):
    """10 training images in 4s (4, 4, 2) and 9 eval images in 8s (8, 1): all four met first."""
    log: list = []
    real_start = engine.PhaseClock.start

    def start(self, phase):
        log.append(("clock", phase))
        real_start(self, phase)

    monkeypatch.setattr(engine.PhaseClock, "start", start)
    fit = _recorded_fit(log, on_phase=lambda name: log.append(("phase", name)))
    first_clock = log.index(("clock", "data"))
    before, after = log[:first_clock], log[first_clock:]
    shapes = {("train", 4), ("train", 2), ("eval", 8), ("eval", 1)}
    assert {e for e in before if e[0] in ("train", "eval")} == shapes
    assert {e for e in after if e[0] in ("train", "eval")} == shapes  # nothing new after it
    assert before.index(("phase", "train warm-up")) < before.index(("train", 4))
    assert fit.warmup_batches == {"train": [4, 2], "eval": [8, 1]}


def test_one_off_costs_land_in_the_warm_up_not_in_the_compared_time(monkeypatch):
    """A cost of 1 s per new shape (as cuDNN autotuning or a recompilation) on a clock that
    only that cost moves: the warm-up holds all four, the compared times none."""
    now = [0.0]
    monkeypatch.setattr(image_fit, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    monkeypatch.setattr(time, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))
    fit = _recorded_fit([], first_call_seconds=1.0)
    assert fit.warmup_seconds == 4.0
    assert fit.train_seconds == 0.0 and fit.eval_seconds == 0.0
    assert fit.cost()["warmup_seconds"] == 4.0
    cold = _recorded_fit([], first_call_seconds=1.0, warmup=False)
    assert cold.train_seconds + cold.eval_seconds == 4.0  # without it, the run pays them


# --------------------------------------------------------------------------- 7: no host sync


def test_evaluation_counts_per_class_hits_without_bincount(monkeypatch):
    """torch.bincount on CUDA reads its input's range back to the host in every batch."""

    def refuse(*args, **kwargs):
        raise AssertionError("bincount syncs on CUDA")

    monkeypatch.setattr(torch, "bincount", refuse)
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 2])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1, 1, 2, 2]), 3).float()
    out = evaluate_logits(lambda a, b: logits[a:b], labels, 3, 2, CPU)  # 4 batches
    assert out["accuracy"] == pytest.approx(5 / 7)
    # per class: 0 -> 1/2, 1 -> 2/2, 2 -> 2/3
    assert out["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)


def _tiny_convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )  # fmt: skip


@needs_cuda
@pytest.mark.parametrize("resident", [True, False], ids=["split-on-gpu", "split-on-host"])
def test_cuda_evaluation_never_synchronises_before_its_one_read(resident):
    """Issue 12.7, on a real GPU: sync debug mode "error" raises on any synchronising op."""
    ex = Execution(CUDA, "bf16", channels_last=True)
    model = ex.place(_tiny_convnet()).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 20, 20), dtype=torch.uint8, generator=g)
    labels = torch.arange(40) % 3
    logits_of = engine.image_logits(model, images.cuda() if resident else images, 16, ex)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        confusion, loss_sum = engine.eval_counts(logits_of, labels, 3, 8, CUDA)  # 5 batches
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(confusion.sum()) == 40 and float(loss_sum) > 0


@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_cuda_training_steps_never_synchronise(precision):
    """Fused AdamW takes the gradient scaler's inf check on the device: no per-step sync in fp16."""
    ex = Execution(CUDA, precision, channels_last=True)
    model = ex.place(_tiny_convnet())
    hp = Hyperparameters(epochs=1)
    optimizer = make_optimizer([{"params": list(model.parameters())}], hp, CUDA)
    schedule = engine.make_schedule(optimizer, hp, steps_per_epoch=4)
    step = TrainStep(model, optimizer, nn.CrossEntropyLoss(), ex, schedule)
    x = ex.to_input(torch.rand(8, 3, 16, 16, device=CUDA))
    y = torch.randint(0, 3, (8,), device=CUDA)
    step(x, y)  # the first step allocates the optimiser's and the scaler's state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [step(x, y) for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(loss) for loss in losses)


@needs_cuda
def test_cuda_device_identity_and_peak_of_this_gpu():
    identity = device_identity(CUDA)
    assert identity["name"] == torch.cuda.get_device_name(0)
    assert identity["total_memory_bytes"] == torch.cuda.get_device_properties(0).total_memory
    peak = device_peak(identity, "bf16")
    # Either a peak from the table or a reason; never a silent None.
    assert peak.tflops or peak.reason


# --------------------------------------------------------------------------- 8: OOM


def _wrapped_by_compile(inner: Exception) -> Exception:
    from torch._dynamo.exc import BackendCompilerFailed

    return BackendCompilerFailed(lambda *a: None, inner, None)


@pytest.mark.parametrize(
    "exc",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        RuntimeError(
            "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"
        ),
        RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
        ),
        _wrapped_by_compile(torch.cuda.OutOfMemoryError("CUDA out of memory")),
        _wrapped_by_compile(RuntimeError("CUDNN_STATUS_ALLOC_FAILED")),
    ],
    ids=["allocator", "cudnn", "cublas", "cuda-runtime", "mps", "cpu", "compile", "compile-cudnn"],
)
def test_every_form_of_out_of_memory_is_recognised(exc):
    assert is_out_of_memory(exc)
    try:  # and when re-raised by other code, from the OOM
        raise ValueError("step failed") from exc
    except ValueError as outer:
        assert is_out_of_memory(outer)


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        RuntimeError("out of resource: shared memory, Required: 262144, Hardware limit: 232448"),
        ValueError("the loss became nan"),
        _wrapped_by_compile(RuntimeError("unsupported operator aten.foo")),
    ],
)
def test_other_errors_are_not_out_of_memory(exc):
    assert not is_out_of_memory(exc)


# --------------------------------------------------------------------------- 9: memory


def test_uploads_are_timed_before_the_clock_and_counted_apart(monkeypatch):
    """On a GPU with room the splits stay there: their bytes are recorded beside the peak."""
    log: list = []
    uploads = []

    def fits(nbytes, device):
        uploads.append(nbytes)
        log.append("upload")
        return True  # as a GPU with room would; on the CPU the "upload" is the tensor itself

    monkeypatch.setattr(memory, "fits_on_device", fits)
    fit = _recorded_fit(log)
    train_bytes = 10 * 3 * 10 * 10 + 10 * 8  # uint8 images + int64 labels
    eval_bytes = 9 * 3 * 10 * 10
    assert uploads == [10 * 3 * 10 * 10, eval_bytes]
    assert fit.resident_data_bytes == train_bytes + eval_bytes
    assert fit.upload_seconds > 0 and fit.cost()["resident_data_bytes"] == fit.resident_data_bytes
    assert log.index("upload") < log.index(("train", 4))  # before the warm-up, so before the clock


def test_peak_memory_without_the_resident_dataset(monkeypatch):
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 7_000_000_000)
    memory = PeakMemory(CUDA)
    memory.reset()
    out = memory.read(resident_bytes=2_500_000_000)
    assert out["peak_memory_bytes"] == 7_000_000_000
    assert out["resident_data_bytes"] == 2_500_000_000
    assert out["model_peak_memory_bytes"] == 4_500_000_000
    assert out["peak_memory_kind"] == "cuda_max_allocated"


# --------------------------------------------------------------------------- the GPU check script


def _gpu_check():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_gpu_check_stops_at_once_without_cuda(capsys, tmp_path):
    started = time.perf_counter()
    assert _gpu_check().main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--dry-run" in err
    assert time.perf_counter() - started < 5 and not list(tmp_path.iterdir())  # no report written


def test_gpu_check_is_eleven_budgeted_steps_within_eight_minutes():
    gpu_check = _gpu_check()
    budgets = {name: budget for name, budget, _ in gpu_check.STEPS}
    assert len(budgets) == 11 and all(b > 0 for b in budgets.values())
    assert sum(budgets.values()) <= 8 * 60 == gpu_check.TOTAL_BUDGET_S
    assert "ESTIMATES" in gpu_check.__doc__


# slow: the GPU check script's dry run, every CPU step of it (4.5 s).
@pytest.mark.slow
def test_gpu_check_dry_run_lists_every_step_and_runs_its_cpu_part(capsys, tmp_path):
    gpu_check = _gpu_check()
    assert gpu_check.main(["--dry-run", "--only", "memory", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    total = sum(budget for _, budget, _ in gpu_check.STEPS)
    assert f"11 steps, {total} s of budget in all (limit 480 s)" in out
    for name, budget, _ in gpu_check.STEPS:
        assert f"{name:<11} {budget:4d} s  {gpu_check.WHAT[name]}" in out
    # The memory step's CPU part: the OOM protocol, data to the host first, down to an ok fit.
    assert "[memory] ok" in out and "1 of 1 steps ok" in out
    report = next(tmp_path.glob("gpu-check-dry-run-*.md")).read_text()
    assert "| memory | ok |" in report and "oom_data_moved_first=1 [1, 1]" in report
    assert "estimates" in report


def test_a_band_fails_a_step_and_says_which_figure(tmp_path):
    gpu_check = _gpu_check()
    step = gpu_check.Step("x", gpu=False, work=tmp_path)
    step.check("harness_over_bare", 0.9)
    step.check("data_stall_resident", 0.01)
    step.check("resnet50_mfu", None)  # no figure is never in band
    assert [c["ok"] for c in step.checks] == [False, True, False]
    assert step.checks[0]["band"] == "[0.97, +inf]"


def test_every_band_a_gpu_step_names_exists():
    """The GPU branches run only on a GPU: a misspelt band must fail here, not there."""
    import ast
    from pathlib import Path

    gpu_check = _gpu_check()
    tree = ast.parse(Path(gpu_check.__file__).read_text())
    named = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "check":
            band = node.args[2] if len(node.args) > 2 else node.args[0]
            if isinstance(band, ast.Constant):
                named.append(band.value)
            else:  # the precision step's f"{name}_matmul_of_peak", name in fp32 or tf32
                named += ["fp32_matmul_of_peak", "tf32_matmul_of_peak"]
    assert len(named) >= 20
    assert set(named) <= set(gpu_check.BANDS), set(named) - set(gpu_check.BANDS)
