"""`--precision fp32` is true fp32 whatever the process set before (issue 22.8).

With `torch.backends.fp32_precision = "tf32"` set first (PyTorch's per-backend
API), the legacy `allow_tf32 = False` left cuDNN convolutions in TF32 while
the run's key said fp32. Flags only: no CUDA call is made.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from tlbench import execution
from tlbench.engine import Execution
from tlbench.errors import TlbenchError
from tlbench.timing import backend_state

CUDA = torch.device("cuda")


@contextlib.contextmanager
def saved_precision_flags() -> Iterator[None]:
    """The process's fp32-precision words and cudnn.benchmark, put back after the block."""
    b = torch.backends
    saved = (
        b.fp32_precision, b.cudnn.fp32_precision, b.cuda.matmul.fp32_precision,
        b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision, b.cudnn.benchmark,
    )  # fmt: skip
    try:
        yield
    finally:
        b.fp32_precision, b.cudnn.fp32_precision = saved[0], saved[1]
        b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision = saved[2], saved[3]
        b.cudnn.rnn.fp32_precision, b.cudnn.benchmark = saved[4], saved[5]


@pytest.fixture
def flags():
    with saved_precision_flags():
        yield


@pytest.mark.parametrize("before", ["tf32", "ieee", "none"])
@pytest.mark.parametrize(("precision", "tf32"), [("fp32", False), ("tf32", True), ("bf16", False)])
def test_precision_holds_whatever_the_process_set_first(flags, before, precision, tf32):
    torch.backends.fp32_precision = before
    Execution(CUDA, precision).apply_backends()
    assert backend_state()["tf32_matmul"] is tf32
    assert backend_state()["tf32_cudnn"] is tf32
    word = "tf32" if tf32 else "ieee"
    assert torch.backends.cudnn.conv.fp32_precision == word  # what cuDNN convolutions follow
    assert torch.backends.cuda.matmul.fp32_precision == word


def test_the_read_back_resolves_what_an_operator_inherits(flags):
    torch.backends.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "none"  # inherits the CUDA level, which is tf32
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    assert backend_state()["tf32_cudnn"] is True and backend_state()["tf32_matmul"] is False


def test_a_run_fails_when_the_read_back_differs(flags, monkeypatch):
    torch.backends.fp32_precision = "tf32"
    monkeypatch.setattr(execution, "set_tf32", lambda on: None)  # a PyTorch that ignored the flags
    with pytest.raises(TlbenchError, match=r"precision fp32 needs TF32 off.*tf32_cudnn"):
        Execution(CUDA, "fp32").apply_backends()
    Execution(torch.device("cpu"), "fp32").apply_backends()  # a CPU run sets and checks nothing
