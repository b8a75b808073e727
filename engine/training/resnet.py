"""ResNet18 (He et al. 2016, "Deep Residual Learning for Image Recognition"), written out here.

The engine used torchvision's resnet18; importing torchvision costs 2.4 s on every engine
start on this machine (it pulls in torch._dynamo), and a torchvision wheel that does not
match the installed torch refuses to import at all. Eighteen layers are short to write.

Layer names, shapes and initialisation are torchvision's, so checkpoints load either way
and, for the same seed, the "stock" network starts from the same weights, bit for bit
(tests/test_model.py compares the two). Modules are built in torchvision's order for that
reason: a stage's shortcut projection before its first block.
"""

from __future__ import annotations

import torch
from torch import nn

WIDTHS = (64, 128, 256, 512)   # channels of layer1..layer4; each layer is two BasicBlocks


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm, and the input (projected when the shape changes) added back."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


def stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Two blocks; the first changes resolution and width, through a 1x1 projection when it does."""
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(out_channels))
    return nn.Sequential(BasicBlock(in_channels, out_channels, stride, downsample),
                         BasicBlock(out_channels, out_channels, 1, None))


class ResNet18(nn.Module):
    """Stem, four stages, global average pool, one linear layer.

    `small_stem`: a 3x3 stride-1 conv and no max-pool (for small images) instead of the
    7x7 stride-2 conv and 3x3 stride-2 max-pool.
    """

    def __init__(self, in_channels: int = 3, num_outputs: int = 1, small_stem: bool = False) -> None:
        super().__init__()
        if small_stem:
            self.conv1 = nn.Conv2d(in_channels, WIDTHS[0], 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, WIDTHS[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.Identity() if small_stem else nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = stage(WIDTHS[0], WIDTHS[0], 1)
        self.layer2 = stage(WIDTHS[0], WIDTHS[1], 2)
        self.layer3 = stage(WIDTHS[1], WIDTHS[2], 2)
        self.layer4 = stage(WIDTHS[2], WIDTHS[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(WIDTHS[3], num_outputs)
        for m in self.modules():   # He initialisation for the convolutions; BatchNorm as the identity
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
