"""One optimisation step of the training loop: eager, or replayed from a CUDA graph.

At the plan's batch of 128 a ResNet18 step on a GPU is bound by the CPU launching a few
hundred kernels, not by the GPU: on one H100 an eager step took 12.1 ms, the same step
captured once as a CUDA graph and replayed 2.4 ms (bench/gpu_step_probe.py,
docs/PERFORMANCE.md). `CudaGraphStep` is that: forward, loss, backward and the fused
AdamW update of a full batch, captured once; each batch is copied into its static input
tensors and the graph replayed. Augmentation stays outside (it draws from a per-batch
generator). A batch of another size (the epoch's last, partial one) runs eagerly through
the same model and optimiser.

Capturing needs a few warm-up steps (cuDNN autotuning, the optimiser's lazy state); they
change the weights, so the model and optimiser state are saved before and copied back in
place after: the graph keeps pointing at the same tensors, and training continues from
exactly where it was. The learning rate lives in a tensor that `after_schedule` fills in
place after each scheduler step; a float would be baked into the graph.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from engine.training.device import Precision

WARMUP_STEPS = 3


class EagerStep:
    """forward -> BCE -> backward -> (grad scaler) -> optimiser, one batch at a time."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, precision: Precision, device: torch.device) -> None:
        self.forward, self.optimizer, self.scaler = forward, optimizer, scaler
        self.precision, self.device = precision, device

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step on (x, y); returns the batch's mean loss (a detached tensor on the device)."""
        with self.precision.autocast(self.device):
            logits = self.forward(x).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def after_schedule(self) -> None:
        """Nothing to do: the optimiser reads its float learning rate each step."""


class CudaGraph:
    """The CUDA side of `CudaGraphStep`: warm-up off the default stream, one capture, replays."""

    def warm_up(self, fn: Callable[[], Any], times: int) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):   # warm-up off the default stream, as capture requires
            for _ in range(times):
                fn()
        torch.cuda.current_stream().wait_stream(side)

    def capture(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Record fn's kernels (not run); returns its output tensor, which each replay rewrites."""
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            return fn()

    def replay(self) -> None:
        self.graph.replay()


class CudaGraphStep:
    """The full-batch step captured as one CUDA graph; other batch sizes fall to `eager`.

    `graph` is the CUDA mechanics (tests on the CPU give a stand-in that re-runs the
    captured function and insists every tensor it touched is still the same memory).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision,
                 example_x: torch.Tensor, example_y: torch.Tensor, eager: EagerStep,
                 graph: CudaGraph | None = None) -> None:
        if graph is None and example_x.device.type != "cuda":
            raise ValueError("a CUDA graph step needs CUDA tensors")
        if precision.use_scaler:
            raise ValueError("a CUDA graph step cannot use fp16's grad scaler (it syncs with the host); "
                             "this GPU has no bf16: train without --cuda-graph")
        if not all(group.get("capturable") for group in optimizer.param_groups):
            raise ValueError("a CUDA graph step needs an optimiser built with capturable=True "
                             "(engine.training.model.build_optimizer(..., cuda_graph=True))")
        self.eager, self.optimizer = eager, optimizer
        # The learning rate into device tensors the graph reads (a float would be baked in).
        self.lr_tensors = [torch.tensor(float(group["lr"]), dtype=torch.float32, device=example_x.device)
                           for group in optimizer.param_groups]
        for group, tensor in zip(optimizer.param_groups, self.lr_tensors):
            group["lr"] = tensor
        self.batch_size = example_x.shape[0]
        self.static_x = example_x.detach().clone()
        self.static_y = example_y.detach().clone()
        dtype, device_type = precision.dtype, example_x.device.type
        saved = _snapshot(model, optimizer)

        def step() -> torch.Tensor:
            # Autocast's weight cache must be off while capturing (torch docs, CUDA graphs + AMP).
            with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None, cache_enabled=False):
                logits = model(self.static_x).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(logits.float(), self.static_y)
            loss.backward()
            optimizer.step()
            return loss

        def warm_up_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            step()

        self.graph = graph or CudaGraph()
        self.graph.warm_up(warm_up_step, WARMUP_STEPS)
        # No gradients while capturing: backward then writes them, at addresses the graph keeps.
        optimizer.zero_grad(set_to_none=True)
        self.static_loss = self.graph.capture(step)
        _restore(model, optimizer, saved)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step on (x, y); returns the batch's mean loss (a detached tensor on the device)."""
        if x.shape[0] != self.batch_size:
            return self.eager(x, y)
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.graph.replay()
        return self.static_loss.detach().clone()

    def after_schedule(self) -> None:
        """The schedule's new learning rate into the tensors the graph reads, whatever the scheduler wrote.

        torch's schedulers fill a tensor lr in place in recent versions and may assign a float
        in others; either way the captured tensor gets the value and goes back into the group.
        """
        for group, tensor in zip(self.optimizer.param_groups, self.lr_tensors):
            value = float(group["lr"])
            tensor.fill_(value)
            group["lr"] = tensor


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Copies of the weights, buffers and optimiser state: what the warm-up steps will change."""
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": {p: {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in s.items()}
                      for p, s in optimizer.state.items()},
    }


@torch.no_grad()
def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Back to the snapshot, in place: the captured graph keeps the same tensors.

    A parameter whose optimiser state the warm-up created (a fresh run) gets that state
    zeroed, which is what AdamW's lazy initialisation makes (step 0, zero moments).
    """
    for key, value in model.state_dict().items():
        value.copy_(saved["model"][key])
    for param, state in optimizer.state.items():
        before = saved["optimizer"].get(param)
        for key, value in state.items():
            if not torch.is_tensor(value):
                continue
            if before is None:
                value.zero_()
            else:
                value.copy_(before[key])
