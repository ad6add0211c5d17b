"""tlbench's optimisers are torch.optim's, bit for bit, without importing torch._dynamo.

`tlbench.optim.SGD`, `AdamW` and `LBFGS` call the functions torch.optim's
decorators wrap (issue 23: the import cost a warm `tlbench run` 1.5 s). Each
is trained beside the stock class from the same start: the weights after
every step, the state dicts and a run resumed from one must be identical.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from tlbench import optim
from tlbench.plugin_types import Hyperparameters

CASES = {
    "sgd": (optim.SGD, torch.optim.SGD, {"lr": 0.1}),
    "sgd-nesterov": (
        optim.SGD,
        torch.optim.SGD,
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
    ),
    "sgd-foreach": (optim.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "foreach": True}),
    "adamw": (optim.AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.05}),
    "adamw-single-tensor": (optim.AdamW, torch.optim.AdamW, {"lr": 0.01, "foreach": False}),
}


def _problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
    return model, torch.randn(32, 12), torch.randint(0, 4, (32,))


def _train(optimizer_class, kwargs, steps: int, *, scaler: bool = False, resume_at: int = 0):
    """Weights after each step of `steps` (the optimiser rebuilt from its state dict
    after `resume_at` steps, when given), and the final state dict."""
    model, x, y = _problem()
    groups = [
        {"params": [p for p in model.parameters() if p.ndim > 1]},
        {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0},
    ]
    opt = optimizer_class(groups, **kwargs)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (1 + s))
    grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8) if scaler else None
    seen = []
    for step in range(steps):
        if step == resume_at and step:
            state = opt.state_dict()
            opt = optimizer_class(groups, **kwargs)
            opt.load_state_dict(state)
            schedule.optimizer = opt
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        if grad_scaler is not None:
            grad_scaler.scale(loss).backward()
            grad_scaler.step(opt)
            grad_scaler.update()
        else:
            loss.backward()
            opt.step()
        schedule.step()
        seen.append([p.detach().clone() for p in model.parameters()])
    return seen, opt.state_dict()


def _assert_identical(ours, theirs):
    (ours_seen, ours_state), (their_seen, their_state) = ours, theirs
    for step, (a, b) in enumerate(zip(ours_seen, their_seen, strict=True)):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True)), f"step {step}"
    assert ours_state["param_groups"] == their_state["param_groups"]
    assert ours_state["state"].keys() == their_state["state"].keys()
    for key, entry in ours_state["state"].items():
        assert entry.keys() == their_state["state"][key].keys()
        for name, value in entry.items():
            assert torch.equal(
                torch.as_tensor(value), torch.as_tensor(their_state["state"][key][name])
            )


@pytest.mark.parametrize("case", CASES)
def test_each_step_and_the_state_dict_equal_torch_optims_own(case):
    ours, theirs, kwargs = CASES[case]
    assert issubclass(ours, theirs)
    _assert_identical(_train(ours, kwargs, 6), _train(theirs, kwargs, 6))


@pytest.mark.parametrize("case", ["sgd-nesterov", "adamw"])
def test_a_run_resumed_from_a_state_dict_continues_as_torch_optims_own(case):
    ours, theirs, kwargs = CASES[case]
    whole = _train(theirs, kwargs, 6)
    _assert_identical(_train(ours, kwargs, 6, resume_at=3), whole)
    _assert_identical(_train(theirs, kwargs, 6, resume_at=3), whole)


@pytest.mark.parametrize("case", ["sgd-nesterov", "adamw"])
def test_a_step_through_a_gradient_scaler_equals_torch_optims_own(case):
    ours, theirs, kwargs = CASES[case]
    _assert_identical(_train(ours, kwargs, 4, scaler=True), _train(theirs, kwargs, 4, scaler=True))


def test_lbfgs_with_its_line_search_equals_torch_optims_own():
    def fit(optimizer_class):
        model, x, y = _problem()
        opt = optimizer_class(model.parameters(), lr=1.0, max_iter=5, line_search_fn="strong_wolfe")

        def objective():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        losses = [float(opt.step(objective).detach()) for _ in range(3)]
        return losses, [p.detach().clone() for p in model.parameters()]

    (our_losses, our_weights), (their_losses, their_weights) = (
        fit(optim.LBFGS),
        fit(torch.optim.LBFGS),
    )
    assert our_losses == their_losses
    assert all(torch.equal(u, v) for u, v in zip(our_weights, their_weights, strict=True))


def test_the_step_runs_without_recording_a_graph_even_where_grad_is_on():
    model, x, y = _problem()
    opt = optim.make_optimizer([{"params": model.parameters()}], Hyperparameters(lr=0.1))
    nn.functional.cross_entropy(model(x), y).backward()
    with torch.enable_grad():
        opt.step()
    assert all(p.grad_fn is None for p in model.parameters())
    assert all(not s["exp_avg"].requires_grad for s in opt.state.values())


@pytest.mark.slow  # a fresh interpreter imports torch and trains
def test_training_in_a_fresh_process_never_imports_torch_dynamo():
    """The fits' optimisers, their schedule and state dicts, and the L-BFGS probe."""
    script = textwrap.dedent(
        """
        import sys
        import torch
        from torch import nn
        from tlbench import optim
        from tlbench.plugin_types import Hyperparameters

        model = nn.Linear(6, 3)
        x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
        for name in ("sgd", "adamw"):
            hp = Hyperparameters(optimizer=name, lr=0.1, momentum=0.9, epochs=2)
            opt = optim.make_optimizer([{"params": model.parameters()}], hp)
            schedule = optim.make_schedule(opt, hp, steps_per_epoch=2)
            for _ in range(3):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                schedule.step()
            opt.load_state_dict(opt.state_dict())
        lbfgs = optim.LBFGS(model.parameters(), max_iter=3)
        def objective():
            lbfgs.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss
        lbfgs.step(objective)
        print("torch._dynamo" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False", out.stderr
