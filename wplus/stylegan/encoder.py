"""e4e's encoder (`Encoder4Editing`): ResNet-IR-SE50 body, a 3-level FPN and one GradualStyleBlock per
W+ layer, in plain PyTorch with the official key names (`encoder.*` without the prefix).

e4e predicts one base code w0 from the coarsest features and a per-layer offset for every other
layer (w_i = w0 + delta_i); coarse layers read the 16x16 map, middle layers the FPN's 32x32 map and
fine layers its 64x64 map. The output does not include `latent_avg` (the caller adds it).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from wplus.geometry import NUM_STYLES, STYLE_DIM
from wplus.stylegan.generator import EqualLinear


class SEModule(nn.Module):
    """Squeeze-and-excitation gate (bias-free 1x1 convs)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(g))))


class BottleneckIRSE(nn.Module):
    """Pre-activation IR unit: BN, conv3x3, PReLU, conv3x3(stride), BN, SE; shortcut pool or conv+BN."""

    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class GradualStyleBlock(nn.Module):
    """Stride-2 convs (LeakyReLU 0.01) down to 1x1, then an EqualLinear: one style vector."""

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        self.out_c = out_c
        layers: List[nn.Module] = []
        for i in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(in_c if i == 0 else out_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).reshape(-1, self.out_c))


@dataclass(frozen=True)
class EncoderConfig:
    """`units[i]` IR-SE units of width `widths[i]` per stage (IR-SE50: 3, 4, 14, 3)."""

    style_count: int = NUM_STYLES
    style_dim: int = STYLE_DIM
    widths: Tuple[int, ...] = (64, 128, 256, 512)
    units: Tuple[int, ...] = (3, 4, 14, 3)
    coarse_ind: int = 3
    middle_ind: int = 7


class Encoder4Editing(nn.Module):
    """Image (B, 3, 256, 256) in [-1, 1] -> W+ offsets (B, style_count, style_dim)."""

    def __init__(self, config: EncoderConfig = EncoderConfig()):
        super().__init__()
        c = config
        if len(c.widths) != 4 or len(c.units) != 4:
            raise ValueError("the IR-SE body has exactly four stages")
        self.config = c
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, c.widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(c.widths[0]),
            nn.PReLU(c.widths[0]))
        units: List[nn.Module] = []
        in_c = c.widths[0]
        for depth, n in zip(c.widths, c.units):
            units += [BottleneckIRSE(in_c, depth, 2)] + [BottleneckIRSE(depth, depth, 1)
                                                          for _ in range(n - 1)]
            in_c = depth
        self.body = nn.Sequential(*units)
        ends = [sum(c.units[:i + 1]) - 1 for i in range(4)]
        self._taps = (ends[1], ends[2], ends[3])  # c1 (64x64), c2 (32x32), c3 (16x16)
        top = c.widths[3]
        self.styles = nn.ModuleList(
            GradualStyleBlock(top, c.style_dim, 16 if i < c.coarse_ind else 32 if i < c.middle_ind else 64)
            for i in range(c.style_count))
        self.latlayer1 = nn.Conv2d(c.widths[2], top, 1)
        self.latlayer2 = nn.Conv2d(c.widths[1], top, 1)

    @staticmethod
    def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_layer(x)
        feats = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self._taps:
                feats[i] = x
        c1, c2, c3 = (feats[i] for i in self._taps)
        w0 = self.styles[0](c3)
        codes = [w0]
        features = c3
        for i in range(1, self.config.style_count):
            if i == self.config.coarse_ind:
                p2 = self._upsample_add(c3, self.latlayer1(c2))
                features = p2
            elif i == self.config.middle_ind:
                features = self._upsample_add(p2, self.latlayer2(c1))
            codes.append(w0 + self.styles[i](features))
        return torch.stack(codes, dim=1)


def config_from_state_dict(sd: Dict[str, torch.Tensor]) -> EncoderConfig:
    """Read the architecture from an encoder state dict (keys without `encoder.`)."""
    depths: List[int] = []
    n_units = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.", k)))
    for i in range(n_units):
        depths.append(int(sd[f"body.{i}.res_layer.1.weight"].shape[0]))
    widths, units = [], []
    for d in depths:
        if widths and widths[-1] == d:
            units[-1] += 1
        else:
            widths.append(d)
            units.append(1)
    style_count = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"styles\.(\d+)\.", k)))
    return EncoderConfig(style_count=style_count, style_dim=int(sd["styles.0.linear.weight"].shape[0]),
                         widths=tuple(widths), units=tuple(units))
