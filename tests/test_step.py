"""The training step's state handling: what a CUDA graph capture relies on, checked on the CPU.

Capturing a CUDA graph (engine/training/step.py) runs warm-up steps and then puts the weights and the
optimiser state back in place; resuming a run on another device loads the optimiser state
into an optimiser built differently (fused, capturable). Both must leave training exactly
where it was. The capture itself needs a GPU: bench/gpu.sh runs it there. Here the graph step
runs whole with a stand-in for the CUDA mechanics (`RerunGraph`), checked against eager
training batch by batch.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from engine.training.device import FP32
from engine.training.checkpoint import load_optimizer_state
from engine.training.model import build_optimizer
from engine.training.step import WARMUP_STEPS, CudaGraphStep, EagerStep, _restore, _snapshot


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


class RerunGraph:
    """engine.training.step.CudaGraph's stand-in on the CPU: a replay re-runs the captured function.

    A real replay runs the captured kernels on the memory they saw at capture, so a replay here
    fails unless every tensor the step reads or writes (weights, buffers, optimiser state, the
    learning-rate tensors) is still the same memory; the captured backward writes gradients
    rather than adding to them, so they are cleared first.
    """

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        self.model, self.opt = model, opt
        self.warm_ups = self.replays = 0

    def tensors(self) -> list[int]:
        state = [v for s in self.opt.state.values() for v in s.values() if torch.is_tensor(v)]
        lrs = [g["lr"] for g in self.opt.param_groups]
        return [t.data_ptr() for t in [*self.model.state_dict().values(), *state, *lrs]]

    def warm_up(self, fn, times: int) -> None:
        for _ in range(times):
            fn()
            self.warm_ups += 1

    def capture(self, fn) -> torch.Tensor:
        self.fn, self.addresses = fn, self.tensors()
        self.output = fn().detach()     # a replay rewrites the captured output in place
        return self.output

    def replay(self) -> None:
        assert self.tensors() == self.addresses, "a tensor the graph uses was replaced after capture"
        self.opt.zero_grad(set_to_none=True)
        self.output.copy_(self.fn().detach())
        self.replays += 1


def graph_step() -> tuple[torch.optim.Optimizer, CudaGraphStep]:
    """A fresh tiny model's step, captured through the stand-in."""
    cpu = torch.device("cpu")
    model = tiny_model().train()
    opt = build_optimizer(model, 1e-2, 1e-4, cpu, cuda_graph=True)
    eager = EagerStep(model, opt, torch.amp.GradScaler("cpu", enabled=False), FP32, cpu)
    return opt, CudaGraphStep(model, opt, FP32, *batch(99), eager, graph=RerunGraph(model, opt))


def train_epochs(use_graph: bool, steps_before: int) -> tuple[torch.nn.Module, list[float], list[float], RerunGraph]:
    """Three epochs of two full batches of 8 and a last one of 5, the cosine schedule stepped per epoch."""
    cpu = torch.device("cpu")
    model = tiny_model().train()
    opt = build_optimizer(model, 1e-2, 1e-4, cpu, cuda_graph=True)    # fused + capturable, as on the GPU
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)
    eager = EagerStep(model, opt, torch.amp.GradScaler("cpu", enabled=False), FP32, cpu)
    for i in range(steps_before):                                     # a resumed run: state before capture
        eager(*batch(50 + i))
    graph = RerunGraph(model, opt)
    if use_graph:
        step = CudaGraphStep(model, opt, FP32, *batch(99), eager, graph=graph)
    else:   # the same arithmetic without the graph: the rate as a float32 tensor too
        for group in opt.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32)
        step = eager
    losses, rates = [], []
    for epoch in range(3):
        rates.append(float(opt.param_groups[0]["lr"]))
        for b in range(3):
            x, y = batch(10 * epoch + b)
            if b == 2:
                x, y = x[:5], y[:5]
            losses.append(float(step(x, y)))
        schedule.step()
        if use_graph:
            step.after_schedule()
    return model, losses, rates, graph


@pytest.mark.parametrize("steps_before", [0, 2], ids=["fresh run", "resumed run"])
def test_training_through_the_graph_step_equals_eager_training(steps_before):
    graph_model, graph_losses, graph_rates, graph = train_epochs(True, steps_before)
    eager_model, eager_losses, eager_rates, _ = train_epochs(False, steps_before)
    assert graph.warm_ups == WARMUP_STEPS and graph.replays == 6, "full batches replay, the last ones run eagerly"
    assert graph_losses == eager_losses
    assert states_equal(graph_model, eager_model), "the warm-up left no trace; each step the eager one"
    # The schedule reached the graph: cosine annealing's rates, 1e-2 x (1 + cos(pi t / 3)) / 2, to float32.
    expected = [1e-2 * (1 + math.cos(math.pi * t / 3)) / 2 for t in range(3)]
    assert graph_rates == pytest.approx(expected, rel=1e-6)


def test_a_tensor_replaced_after_capture_is_caught_by_the_stand_in():
    """The stand-in bites: loading optimiser state the usual way replaces the tensors the graph holds."""
    opt, step = graph_step()
    step(*batch(1))
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    with pytest.raises(AssertionError, match="replaced after capture"):
        step(*batch(2))


def test_a_scheduler_that_assigns_a_float_still_reaches_the_captured_rate():
    """Some torch versions' schedulers write a float into the group; the graph reads only its tensor."""
    opt, step = graph_step()
    (captured,) = step.lr_tensors
    opt.param_groups[0]["lr"] = 2.5e-3
    step.after_schedule()
    assert opt.param_groups[0]["lr"] is captured and float(captured) == pytest.approx(2.5e-3)
    step(*batch(1))   # and the replay still finds the same tensors
