"""The classifier: ResNet18, 3 bands in, one logit out, two stems; checkpoints load with weights_only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.training.checkpoint import CheckpointError, _os_error_in, load_checkpoint, remove_stale_temp_files, save_checkpoint
from engine.training.model import build_model, count_parameters, load_model

torch.set_num_threads(1)


def _layer4_map(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    seen = {}

    def hook(module, inputs, output):
        seen["shape"] = tuple(output.shape)

    handle = model.layer4.register_forward_hook(hook)
    with torch.no_grad():
        out = model.eval()(x)
    handle.remove()
    assert out.shape == (x.shape[0], 1)
    return seen["shape"]


def test_stock_stem_leaves_a_2x2_map_and_cifar_an_8x8_one():
    x = torch.randn(2, 3, 63, 63)
    assert _layer4_map(build_model("stock"), x) == (2, 512, 2, 2)
    assert _layer4_map(build_model("cifar"), x) == (2, 512, 8, 8)


def test_our_resnet18_is_torchvisions_layer_for_layer_and_starts_from_the_same_weights():
    """engine/training/resnet.py replaces torchvision's resnet18 (a 2.4 s import): same names, shapes,
    initial weights for a seed, forward and gradients, so old checkpoints and seeds still hold."""
    torchvision = pytest.importorskip("torchvision")
    x = torch.randn(6, 3, 63, 63, generator=torch.Generator().manual_seed(1))
    for seed in (0, 42):
        torch.manual_seed(seed)
        ours = build_model("stock")
        torch.manual_seed(seed)
        theirs = torchvision.models.resnet18(weights=None, num_classes=1)
        a, b = ours.state_dict(), theirs.state_dict()
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
        for model in (ours, theirs):
            model.train()(x).square().sum().backward()
        assert all(torch.equal(p.grad, q.grad) for p, q in zip(ours.parameters(), theirs.parameters()))
        assert torch.equal(ours.eval()(x), theirs.eval()(x))

    # The small-image stem: torchvision's network with its stem replaced computes the same function.
    cifar = build_model("cifar")
    theirs = torchvision.models.resnet18(weights=None, num_classes=1)
    theirs.conv1 = torch.nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    theirs.maxpool = torch.nn.Identity()
    theirs.load_state_dict(cifar.state_dict())
    assert torch.equal(cifar.eval()(x), theirs.eval()(x))


def test_the_engine_trains_without_importing_torchvision():
    probe = ("import sys, engine.training.train, engine.training.evaluate; from engine.training.model import build_model; build_model(); "
             "print('torchvision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_stems_differ_only_in_the_first_convolution():
    stock, cifar = build_model("stock"), build_model("cifar")
    assert stock.conv1.kernel_size == (7, 7) and stock.conv1.stride == (2, 2)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    # 3*64*(7*7 - 3*3) weights fewer in the 3x3 stem; everything else is the same network.
    assert count_parameters(stock) - count_parameters(cifar) == 3 * 64 * (49 - 9)


def test_same_seed_same_initial_weights():
    torch.manual_seed(7)
    a = build_model("stock")
    torch.manual_seed(7)
    b = build_model("stock")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = build_model("cifar")
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": model.state_dict(), "stem": "cifar", "in_channels": 3, "epoch": 4,
                           "note": {"nested": [1, 2.5, None]}})
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 4 and raw["note"] == {"nested": [1, 2.5, None]}
    loaded, ckpt = load_model(path)
    x = torch.randn(3, 3, 63, 63)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_a_damaged_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a checkpoint")
    try:
        load_checkpoint(path)
    except Exception as exc:  # CheckpointError
        assert str(path) in str(exc) and type(exc).__name__ == "CheckpointError"
    else:
        raise AssertionError("a damaged checkpoint loaded")


def test_a_checkpoint_that_cannot_be_written_names_the_file_and_the_reason(tmp_path):
    path = tmp_path / "gone" / "last.pt"
    try:
        save_checkpoint(path, {"model": {}})
    except CheckpointError as exc:
        assert str(path) in str(exc) and "No such file or directory" in str(exc)
    else:
        raise AssertionError("a checkpoint was written into a missing folder")
    # torch reports a full disk as a RuntimeError whose context is the OSError.
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")
    except RuntimeError as exc:
        assert _os_error_in(exc).strerror == "No space left on device"
    assert _os_error_in(RuntimeError("no file system involved")) is None


def test_partial_files_of_a_killed_writer_are_removed(tmp_path):
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".metrics.json.x.tmp").write_text("{")
    (tmp_path / "last.pt").write_bytes(b"keep")
    removed = remove_stale_temp_files(tmp_path, ("last.pt", "metrics.json"))
    assert sorted(removed) == [".last.pt.abc123.tmp", ".metrics.json.x.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
