"""StyleGAN2 generator (rosinality layout, as in e4e's `decoder.*`) in plain PyTorch.

No compiled ops: upfirdn2d is zero-insertion + pad + a depthwise conv with the flipped kernel, and the
fused bias + leaky ReLU is an ordinary elementwise expression, so the module runs on any device.
Parameter and buffer names equal the official checkpoint's keys (without the `decoder.` prefix), so
`load_state_dict(strict=True)` works on `e4e_ffhq_encode.pt`. The blur kernels and the noise maps are
buffers of the checkpoint and are used as stored (they are not assumed to be symmetric).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from wplus.geometry import STYLE_DIM

_SQRT2 = math.sqrt(2.0)
BLUR = (1.0, 3.0, 3.0, 1.0)


def _randn(*shape: int, std: float = 1.0) -> torch.Tensor:
    """N(0, std^2) init; skipped on the meta device (ops there are slow to dispatch, and pointless)."""
    t = torch.empty(*shape)
    return t if t.is_meta else t.normal_(0.0, std)


def make_kernel(taps: Sequence[float] = BLUR, gain: float = 1.0) -> torch.Tensor:
    """Separable FIR taps -> normalised 2-D kernel (sum = gain)."""
    k = torch.tensor(taps, dtype=torch.float32, device="cpu")  # cpu even under a meta-device context
    k = torch.outer(k, k)
    return k * (gain / k.sum())


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: Tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR filter (true convolution: flipped kernel), downsample."""
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0):x.shape[2] - max(-p1, 0), max(-p0, 0):x.shape[3] - max(-p1, 0)]
    kh, kw = kernel.shape
    weight = torch.flip(kernel, [0, 1]).to(x.dtype).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    out = F.conv2d(x, weight.contiguous(), groups=c)  # depthwise: far faster on CPU than (b*c, 1) maps
    return out[:, :, ::down, ::down] if down > 1 else out


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's FusedLeakyReLU: leaky_relu(x + bias, 0.2) * sqrt(2), bias per channel (dim 1)."""
    shape = (1, bias.shape[0]) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.reshape(shape), 0.2) * _SQRT2


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weight * (lr_mul / sqrt(in)), bias * lr_mul."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(_randn(out_dim, in_dim, std=1.0 / lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    def __init__(self, pad: Tuple[int, int], gain: float = 1.0):
        super().__init__()
        self.register_buffer("kernel", make_kernel(BLUR, gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling of the RGB skip branch."""

    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(BLUR, factor ** 2))
        p = len(BLUR) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated conv; per-sample weights via a grouped conv (upsample: transposed conv + blur)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.demodulate, self.upsample = demodulate, upsample
        if upsample:
            p = (len(BLUR) - 2) - (kernel_size - 1)
            self.blur = Blur(pad=((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(_randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, cin, h, w = x.shape
        k, cout = self.kernel_size, self.out_channel
        s = self.modulation(style).reshape(b, 1, cin, 1, 1)
        weight = self.scale * self.weight * s                       # (b, out, in, k, k)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.reshape(b, cout, 1, 1, 1)
        x = x.reshape(1, b * cin, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(b * cin, cout, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=b)
            out = self.blur(out.reshape(b, cout, out.shape[2], out.shape[3]))
            return out
        out = F.conv2d(x, weight.reshape(b * cout, cin, k, k), padding=self.padding, groups=b)
        return out.reshape(b, cout, out.shape[2], out.shape[3])


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: Optional[torch.Tensor]) -> torch.Tensor:
        if noise is None:
            noise = x.new_empty(x.shape[0], 1, x.shape[2], x.shape[3]).normal_()
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class StyledConv(nn.Module):
    def __init__(self, in_channel: int, out_channel: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, style: torch.Tensor,
                noise: Optional[torch.Tensor]) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor,
                skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(_randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of a rosinality StyleGAN2 generator; `channels[i]` is the width at 4*2**i px."""

    size: int = 1024
    style_dim: int = STYLE_DIM
    n_mlp: int = 8
    channels: Tuple[int, ...] = (512, 512, 512, 512, 512, 256, 128, 64, 32)
    lr_mlp: float = 0.01

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def n_latent(self) -> int:
        return self.log_size * 2 - 2

    @property
    def num_noises(self) -> int:
        return (self.log_size - 2) * 2 + 1


class Generator(nn.Module):
    """Synthesis network + mapping MLP (`style`); `forward` takes W+ codes (B, n_latent, style_dim)."""

    def __init__(self, config: GeneratorConfig = GeneratorConfig()):
        super().__init__()
        c = config
        if len(c.channels) != c.log_size - 1:
            raise ValueError(f"need {c.log_size - 1} channel widths for size {c.size}")
        self.config = c
        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(c.style_dim, c.style_dim, lr_mul=c.lr_mlp, activate=True) for _ in range(c.n_mlp)])
        self.input = ConstantInput(c.channels[0])
        self.conv1 = StyledConv(c.channels[0], c.channels[0], c.style_dim)
        self.to_rgb1 = ToRGB(c.channels[0], c.style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(c.num_noises):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", _randn(1, 1, res, res))
        for cin, cout in zip(c.channels[:-1], c.channels[1:]):
            self.convs.append(StyledConv(cin, cout, c.style_dim, upsample=True))
            self.convs.append(StyledConv(cout, cout, c.style_dim))
            self.to_rgbs.append(ToRGB(cout, c.style_dim))

    @property
    def n_latent(self) -> int:
        return self.config.n_latent

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, style_dim) -> w (B, style_dim) through PixelNorm + the lr_mul MLP."""
        return self.style(z)

    def fixed_noise(self) -> list:
        return [getattr(self.noises, f"noise_{i}") for i in range(self.config.num_noises)]

    def forward(self, w: torch.Tensor, randomize_noise: bool = False) -> torch.Tensor:
        """W+ (B, n_latent, style_dim) -> image (B, 3, size, size), roughly in [-1, 1]."""
        if w.ndim == 2:
            w = w.unsqueeze(1).expand(-1, self.n_latent, -1)
        if w.ndim != 3 or w.shape[1] != self.n_latent:
            raise ValueError(f"expected W+ of shape (B, {self.n_latent}, {self.config.style_dim}), "
                             f"got {tuple(w.shape)}")
        noise = [None] * self.config.num_noises if randomize_noise else self.fixed_noise()
        out = self.conv1(self.input(w.shape[0]), w[:, 0], noise[0])
        skip = self.to_rgb1(out, w[:, 1])
        i = 1
        for up, conv, to_rgb, n1, n2 in zip(self.convs[::2], self.convs[1::2], self.to_rgbs,
                                             noise[1::2], noise[2::2]):
            out = conv(up(out, w[:, i], n1), w[:, i + 1], n2)
            skip = to_rgb(out, w[:, i + 2], skip)
            i += 2
        return skip


def config_from_state_dict(sd: Dict[str, torch.Tensor]) -> GeneratorConfig:
    """Read the architecture from a generator state dict (keys without `decoder.`)."""
    n_up = sum(1 for k in sd if k.startswith("to_rgbs.") and k.endswith(".conv.weight"))
    n_mlp = sum(1 for k in sd if k.startswith("style.") and k.endswith(".weight"))
    style_dim = sd["conv1.conv.modulation.weight"].shape[1]
    channels = [sd["conv1.conv.weight"].shape[1]]
    channels += [sd[f"convs.{2 * i}.conv.weight"].shape[1] for i in range(n_up)]
    return GeneratorConfig(size=4 * 2 ** n_up, style_dim=int(style_dim), n_mlp=n_mlp,
                           channels=tuple(int(c) for c in channels))
