"""Keys, precision and labels say where a run trained; shared GPUs are marked (issue 22.2, 22.3).

Before: `--devices cpu,cpu` on a GPU machine planned runs keyed and labelled as
the driver's GPU, with bf16 autocast on the CPU; a T4 worker of a mixed box
inherited the H100's key and bf16; `--devices cuda:0,cuda:0` (two workers on
one GPU, each at about half speed) gave keys equal to an exclusive run's.
The GPUs here are fakes: device names, capabilities and counts.
"""

from __future__ import annotations

import re
import signal
import warnings
from types import SimpleNamespace

import pytest
import torch

from tlbench import plan
from tlbench.config import make_config
from tlbench.errors import TlbenchError
from tlbench.executors import placement, pool
from tlbench.plugin_types import Hyperparameters, RunSpec

H100 = ("NVIDIA H100 80GB HBM3", 79.1, 132, (9, 0))
T4 = ("Tesla T4", 14.6, 40, (7, 5))


@pytest.fixture
def gpus(monkeypatch):
    """`gpus(H100, T4)`: a machine whose cuda:0, cuda:1... are these models."""

    def install(*models):
        def index(device=None) -> int:
            if device is None:
                return 0
            if isinstance(device, int):
                return device
            device = torch.device(device)
            return device.index if device.index is not None else 0

        def props(device=None):
            name, gib, sms, (major, minor) = models[index(device)]
            return SimpleNamespace(name=name, total_memory=int(gib * 2**30), major=major,
                                   minor=minor, multi_processor_count=sms, uuid="GPU-1")  # fmt: skip

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(models))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_properties", props)
        monkeypatch.setattr(
            torch.cuda, "get_device_capability", lambda device=None: models[index(device)][3]
        )
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    return install


def _settings(**flags):
    return plan.execution_settings(make_config(**flags))


def test_cpu_workers_on_a_gpu_machine_plan_cpu_runs(gpus):
    gpus(H100)
    on_cpus = _settings(executor="devices", devices=["cpu", "cpu"], device="auto")
    assert on_cpus == _settings(device="cpu")  # the very key of a CPU run: fp32, no GPU model
    assert on_cpus["device"] == "cpu" and on_cpus["precision"] == "fp32"
    assert "device_model" not in on_cpus
    # The driver's GPU still plans the inline executor's runs.
    assert _settings(device="auto")["device_model"] == "cuda/NVIDIA H100 80GB HBM3/79GiB"


def test_workers_on_different_gpu_models_are_refused(gpus):
    gpus(H100, T4)
    for flags in ({"devices": ["cuda:0", "cuda:1"]}, {}):  # named, or every visible GPU
        with pytest.raises(TlbenchError, match=r"different models \(cuda/NVIDIA H100.*Tesla T4"):
            _settings(executor="devices", device="auto", **flags)
    t4 = _settings(executor="devices", devices=["cuda:1"], device="auto")  # the T4 alone
    assert t4["precision"] == "fp16" and t4["device_model"] == "cuda/Tesla T4/15GiB"


def test_a_shared_gpu_is_marked_in_the_key_and_an_exclusive_one_is_not(gpus):
    gpus(H100, H100)
    alone = _settings(device="cuda")
    assert "device_shared_by" not in alone
    assert _settings(executor="devices", devices=["cuda:0", "cuda:1"], device="auto") == alone
    shared = _settings(executor="devices", devices=["cuda:0", "cuda:0"], device="auto")
    assert shared == {**alone, "device_shared_by": 2}
    assert _settings(executor="devices", devices=["cuda", "cuda:0"])["device_shared_by"] == 2
    spec = dict(backbone="b", dataset="d", strategy="s", seed=0, image_size=32, hp=Hyperparameters(),
                weights=None, dataset_fingerprint="f")  # fmt: skip
    assert RunSpec(execution=shared, **spec).key != RunSpec(execution=alone, **spec).key
    with pytest.raises(TlbenchError, match=r"cuda:0 x2, cuda:1 x1"):
        _settings(executor="devices", devices=["cuda:0", "cuda:0", "cuda:1"])


def test_bf16_below_compute_capability_8_warns_at_plan_time(gpus):
    gpus(T4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        settings = _settings(device="cuda", precision="bf16")
    messages = [str(w.message) for w in seen if issubclass(w.category, UserWarning)]
    assert len(messages) == 1
    assert re.search(r"bf16 on a GPU of compute capability 7\.5", messages[0])
    assert settings["precision"] == "bf16"  # warned, not changed: the key says what ran
    gpus(H100)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _settings(device="cuda", precision="bf16")
    assert not [w for w in seen if "compute capability" in str(w.message)]


def _spec(execution: dict) -> RunSpec:
    return RunSpec(backbone="b", dataset="d", strategy="s", seed=0, image_size=32,
                   hp=Hyperparameters(), execution=execution, weights=None,
                   dataset_fingerprint="f")  # fmt: skip


def test_a_worker_refuses_a_spec_planned_for_another_device(gpus):
    gpus(H100, T4)
    planned = _settings(executor="devices", devices=["cuda:0"])
    assert placement.device_mismatch(_spec(planned), "cuda:0") is None
    why = placement.device_mismatch(_spec(planned), "cuda:1")
    assert "planned for cuda/NVIDIA H100 80GB HBM3/79GiB" in why and "Tesla T4" in why
    assert "planned for cuda but this worker runs on cpu" in placement.device_mismatch(
        _spec(planned), "cpu"
    )


class _Conn:
    """A worker's end of the pipe: hands out `specs`, then None; keeps what is sent."""

    def __init__(self, specs):
        self.specs, self.sent = [*specs, None], []

    def recv(self):
        return self.specs.pop(0)

    def send(self, message):
        self.sent.append(message)


def test_a_worker_claims_its_gpu_and_refuses_what_was_planned_elsewhere(gpus, monkeypatch):
    gpus(H100, T4)
    claimed, ran = [], []
    monkeypatch.setattr(torch.cuda, "set_device", claimed.append)
    monkeypatch.setattr(pool, "_exit_with_parent", lambda parent: None)

    class Host:
        def __init__(self, plugin_set, workspace):
            self.plugins = SimpleNamespace(failures=[], provider=lambda *a: "builtin",
                                           versions=lambda: {})  # fmt: skip

        def run(self, spec, device, events):
            ran.append(device)
            return {"status": "ok"}

    monkeypatch.setattr("tlbench.trial.ProcessCache", Host)
    h100_spec = _spec(_settings(executor="devices", devices=["cuda:0"]))
    conn = _Conn([h100_spec])
    term = signal.getsignal(signal.SIGTERM)
    try:
        pool._serve(conn, None, None, "cuda:1", None, 0)
    finally:
        signal.signal(signal.SIGTERM, term)
    assert claimed == [1]  # torch.cuda.set_device: cuda:1 is this worker's current device
    assert ran == []  # the H100's spec did not train on the T4
    (kind, _), (kind2, record) = conn.sent
    assert (kind, kind2, record["status"]) == ("ready", "record", "failed")
    assert record["reason"].startswith("not run here: planned for cuda/NVIDIA H100")
