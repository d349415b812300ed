"""Backbones in plain torch: MobileNetV2 (width multiplier) and ResNet (depth / width scaled).

Both return a list of feature maps for the configured ``out_indices`` and expose
``out_channels`` (one per output) so the FPN can be built from them.
"""

from __future__ import annotations

from torch import Tensor, nn

from detector.config import BackboneConfig

# MobileNetV2 inverted-residual groups: (expand ratio, channels, blocks, stride).
MBV2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
RESNET_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without going below 90% (as torchvision)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def conv_bn(
    cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU6
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [conv_bn(cin, hidden, 1)]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, act=None)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, cin, H, W] -> [B, cout, H/stride, W/stride]"""
        return x + self.conv(x) if self.residual else self.conv(x)


class StagedBackbone(nn.Module):
    """A stem then ``stages``; returns the outputs of the stages in ``out_indices``."""

    stem: nn.Module
    stages: nn.ModuleList
    out_indices: tuple[int, ...]

    def forward(self, x: Tensor) -> list[Tensor]:
        """x: [B, in_channels, H, W] -> one [B, C_i, H/s_i, W/s_i] per out index (s_i its stride)."""
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


class MobileNetV2(StagedBackbone):
    """MobileNetV2; stage i < 7 is inverted-residual group i, stage 7 the final 1x1 conv (1280)."""

    def __init__(self, width: float = 1.0, out_indices: tuple[int, ...] = (2, 4, 7), in_channels: int = 3) -> None:
        super().__init__()
        if not out_indices or max(out_indices) > 7 or min(out_indices) < 0:
            raise ValueError(f"out_indices: stages are 0-7, got {out_indices}")
        self.out_indices = tuple(out_indices)
        cin = make_divisible(32 * width)
        self.stem = conv_bn(in_channels, cin, 3, 2)
        stages: list[nn.Module] = []
        channels: list[int] = []
        for expand, c, n, s in MBV2_SETTINGS[: min(max(out_indices), 6) + 1]:
            cout = make_divisible(c * width)
            blocks = [InvertedResidual(cin if i == 0 else cout, cout, s if i == 0 else 1, expand) for i in range(n)]
            stages.append(nn.Sequential(*blocks))
            channels.append(cout)
            cin = cout
        if 7 in out_indices:
            last = make_divisible(1280 * width) if width > 1.0 else 1280
            stages.append(conv_bn(cin, last, 1))
            channels.append(last)
        self.stages = nn.ModuleList(stages)
        self.out_channels = [channels[i] for i in self.out_indices]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(conv_bn(cin, planes, 3, stride, act=nn.ReLU), conv_bn(planes, cout, 3, act=None))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride, act=None)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, cin, H, W] -> [B, planes * expansion, H/stride, W/stride]"""
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck(BasicBlock):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        nn.Module.__init__(self)
        cout = planes * self.expansion
        self.body = nn.Sequential(
            conv_bn(cin, planes, 1, act=nn.ReLU),
            conv_bn(planes, planes, 3, stride, act=nn.ReLU),
            conv_bn(planes, cout, 1, act=None),
        )
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride, act=None)
        self.relu = nn.ReLU(inplace=True)


class ResNet(StagedBackbone):
    """ResNet (torchvision/mmdet layout, stride on the 3x3 conv); stages 0-3 are C2-C5."""

    def __init__(
        self,
        depth: int = 50,
        width: float = 1.0,
        layers: tuple[int, ...] = (),
        out_indices: tuple[int, ...] = (1, 2, 3),
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ValueError(f"depth: expected one of {sorted(RESNET_LAYERS)}, got {depth}")
        if not out_indices or max(out_indices) > 3 or min(out_indices) < 0:
            raise ValueError(f"out_indices: stages are 0-3, got {out_indices}")
        block = Bottleneck if depth >= 50 else BasicBlock
        layers = tuple(layers) or RESNET_LAYERS[depth]
        base = make_divisible(64 * width)
        self.stem = nn.Sequential(conv_bn(in_channels, base, 7, 2, act=nn.ReLU), nn.MaxPool2d(3, 2, 1))
        self.out_indices = tuple(out_indices)
        stages = []
        channels = []
        cin = base
        for i, n in enumerate(layers[: max(out_indices) + 1]):
            planes = base * 2**i
            blocks = [
                block(cin if j == 0 else planes * block.expansion, planes, 2 if (j == 0 and i > 0) else 1)
                for j in range(n)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = planes * block.expansion
            channels.append(cin)
        self.stages = nn.ModuleList(stages)
        self.out_channels = [channels[i] for i in self.out_indices]


def build_backbone(cfg: BackboneConfig) -> MobileNetV2 | ResNet:
    if cfg.name == "mobilenetv2":
        return MobileNetV2(cfg.width, cfg.out_indices, cfg.in_channels)
    if cfg.name == "resnet":
        return ResNet(cfg.depth, cfg.width, cfg.layers, cfg.out_indices, cfg.in_channels)
    raise ValueError(f"backbone.name: expected 'mobilenetv2' or 'resnet', got {cfg.name!r}")
