"""The training step's state handling: what a CUDA graph capture relies on, checked on the CPU.

Capturing a CUDA graph (engine/step.py) runs warm-up steps and then puts the weights and the
optimiser state back in place; resuming a run on another device loads the optimiser state
into an optimiser built differently (fused, capturable). Both must leave training exactly
where it was. The capture itself needs a GPU: bench/gpu.sh runs it there.
"""

from __future__ import annotations

import copy

import pytest
import torch

from engine.device import FP32
from engine.model import build_optimizer, load_optimizer_state
from engine.step import CudaGraphStep, EagerStep, _restore, _snapshot


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 1))


def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    return torch.randn(8, 3, 9, 9, generator=g), (torch.rand(8, generator=g) < 0.5).float()


def train(model, opt, steps: range) -> None:
    step = EagerStep(model, opt, torch.amp.GradScaler("cpu", enabled=False), FP32, torch.device("cpu"))
    for i in steps:
        step(*batch(i))


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("steps_before", [0, 3], ids=["fresh optimiser", "resumed optimiser"])
def test_warm_up_steps_are_undone_exactly(steps_before):
    model = tiny_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    train(model, opt, range(steps_before))
    twin_model = copy.deepcopy(model)
    twin_opt = torch.optim.AdamW(twin_model.parameters(), lr=1e-2, weight_decay=1e-4)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))   # torch shares `step` tensors otherwise

    saved = _snapshot(model, opt)
    params_before = [p for p in model.parameters()]
    train(model, opt, range(100, 103))            # the warm-up: changes weights, BN stats, moments
    assert not states_equal(model, twin_model)
    _restore(model, opt, saved)
    assert [p for p in model.parameters()] == params_before, "restored in place: the same tensors"
    assert states_equal(model, twin_model)

    # From here both train identically, bit for bit (AdamW's step counter included).
    train(model, opt, range(10, 14))
    train(twin_model, twin_opt, range(10, 14))
    assert states_equal(model, twin_model)


def test_resume_into_a_differently_built_optimiser_keeps_its_build_and_the_update():
    model = tiny_model().train()
    foreach = build_optimizer(model, 1e-2, 1e-4, torch.device("cpu"))
    train(model, foreach, range(3))
    saved = copy.deepcopy(foreach.state_dict())
    twin = copy.deepcopy(model)

    fused = torch.optim.AdamW(twin.parameters(), lr=5e-3, weight_decay=1e-4, fused=True)
    load_optimizer_state(fused, saved)
    group = fused.param_groups[0]
    assert group["fused"] is True and isinstance(group["lr"], float) and group["lr"] == pytest.approx(1e-2)
    assert all(s["step"].dtype == torch.float32 and float(s["step"]) == 3 for s in fused.state.values())

    # The next update agrees (fused and for-loop AdamW differ in rounding only; over several steps
    # Adam's division by sqrt(v) ~ eps would amplify that rounding, so one step is compared).
    before = [p.detach().clone() for p in twin.parameters()]
    train(model, foreach, range(3, 4))
    train(twin, fused, range(3, 4))
    for a, b, old in zip(model.parameters(), twin.parameters(), before):
        assert not torch.equal(b, old)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_a_tensor_learning_rate_saved_under_a_graph_comes_back_a_float():
    model = tiny_model()
    opt = build_optimizer(model, 1e-2, 1e-4, torch.device("cpu"))
    state = copy.deepcopy(opt.state_dict())
    state["param_groups"][0]["lr"] = torch.tensor(2e-3)
    load_optimizer_state(opt, state)
    assert isinstance(opt.param_groups[0]["lr"], float) and opt.param_groups[0]["lr"] == pytest.approx(2e-3)


def test_a_graph_step_refuses_cpu_tensors_and_the_fp16_scaler():
    model = tiny_model()
    opt = build_optimizer(model, 1e-2, 1e-4, torch.device("cpu"))
    eager = EagerStep(model, opt, torch.amp.GradScaler("cpu", enabled=False), FP32, torch.device("cpu"))
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        CudaGraphStep(model, opt, FP32, *batch(0), eager)
