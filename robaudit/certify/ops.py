"""The layers bound propagation understands, each as the maps it needs: the concrete forward, interval
bounds, and (linear layers) the transpose that carries a linear bound back to the layer's input.

Shapes are per sample; tensors carry a batch axis N and, in the backward maps, a spec axis M:
``lam`` is (N, M, *out_shape) and becomes (N, M, *in_shape). Everything runs in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Linear:
    """y = W x + b on flat vectors."""

    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor  # (out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias

    def ibp(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, r = (hi + lo) / 2, (hi - lo) / 2
        mid, rad = self.forward(c), r @ self.weight.abs().T
        return mid - rad, mid + rad

    def back(self, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return lam @ self.weight, lam @ self.bias

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``back`` of the unit vectors e_idx, idx (N, M) output indices: the rows of W, gathered."""
        return self.weight[idx], self.bias[idx]


@dataclass
class Conv:
    weight: torch.Tensor
    bias: torch.Tensor
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    in_shape: tuple[int, int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def ibp(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, r = (hi + lo) / 2, (hi - lo) / 2
        mid = self.forward(c)
        rad = F.conv2d(r, self.weight.abs(), None, self.stride, self.padding, self.dilation, self.groups)
        return mid - rad, mid + rad

    def back(self, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, m, c, h, w = lam.shape
        flat = lam.reshape(n * m, c, h, w)
        _, hin, win = self.in_shape
        k = self.weight.shape[-2:]
        pads = []
        for size, out, s, p, d, kk in zip(
            (hin, win), (h, w), self.stride, self.padding, self.dilation, k, strict=True
        ):
            pads.append(size - ((out - 1) * s - 2 * p + d * (kk - 1) + 1))
        back = F.conv_transpose2d(
            flat, self.weight, None, self.stride, self.padding, tuple(pads), self.groups, self.dilation
        )
        bias = (lam.sum((-1, -2)) * self.bias).sum(-1)
        return back.reshape(n, m, *self.in_shape), bias

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``back`` of the unit vectors e_idx, idx (N, M) flat output indices, without the transposed
        convolution over mostly zeros: each one's kernel is written at its receptive field."""
        cout, cin_g, kh, kw = self.weight.shape
        cin, hin, win = self.in_shape
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        hout = (hin + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wout = (win + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        c, i, j = idx // (hout * wout), idx % (hout * wout) // wout, idx % wout
        n, m = idx.shape
        # index grids (N, M, cin_g, kh, kw); the canvas is the padded input, cropped afterwards
        ci = torch.arange(cin_g).view(1, 1, -1, 1, 1)
        ky = torch.arange(kh).view(1, 1, 1, -1, 1)
        kx = torch.arange(kw).view(1, 1, 1, 1, -1)
        e = (slice(None), slice(None), None, None, None)
        chan = (c // (cout // self.groups))[e] * cin_g + ci
        ys, xs = (i * sh)[e] + dh * ky, (j * sw)[e] + dw * kx
        canvas = self.weight.new_zeros(n, m, cin, hin + 2 * ph, win + 2 * pw)
        nn_, mm = torch.arange(n).view(-1, 1, 1, 1, 1), torch.arange(m).view(1, -1, 1, 1, 1)
        canvas[nn_, mm, chan, ys, xs] = self.weight[c[e], ci, ky, kx]
        return canvas[..., ph : ph + hin, pw : pw + win], self.bias[c]


@dataclass
class ChannelAffine:
    """y = x * scale + shift per channel (axis 1): batch norm in eval mode, mean/std, an input range."""

    scale: torch.Tensor  # (C,)
    shift: torch.Tensor
    ndim: int  # dimensions per sample of the tensor it acts on

    def _view(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(-1, *([1] * (self.ndim - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._view(self.scale) + self._view(self.shift)

    def ibp(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.forward(lo), self.forward(hi)
        return torch.minimum(a, b), torch.maximum(a, b)

    def back(self, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self._view(self.scale), self._view(self.shift)
        bias = (lam * shift).flatten(2).sum(-1)
        return lam * scale, bias


@dataclass
class Reshape:
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.out_shape)

    def ibp(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(lo), self.forward(hi)

    def back(self, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return lam.reshape(*lam.shape[:2], *self.in_shape), lam.new_zeros(lam.shape[:2])


@dataclass
class Permute:
    dims: tuple[int, ...]  # per-sample axes (the batch axis excluded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, *(d + 1 for d in self.dims))

    def ibp(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(lo), self.forward(hi)

    def back(self, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inverse = [0] * len(self.dims)
        for i, d in enumerate(self.dims):
            inverse[d] = i
        return lam.permute(0, 1, *(d + 2 for d in inverse)), lam.new_zeros(lam.shape[:2])


@dataclass
class ReLU:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp_min(0)

    def ibp(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return lo.clamp_min(0), hi.clamp_min(0)


@dataclass
class MaxPool:
    """Non-overlapping max pooling (stride = kernel, no padding): the windows partition the input."""

    kernel: tuple[int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel, self.kernel)

    def ibp(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(lo), self.forward(hi)


Op = Linear | Conv | ChannelAffine | Reshape | Permute | ReLU | MaxPool
LINEAR_OPS = (Linear, Conv, ChannelAffine, Reshape, Permute)


def avgpool_as_conv(
    channels: int, kernel: tuple[int, int], stride: tuple[int, int], in_shape: tuple[int, int, int]
) -> Conv:
    """Average pooling without padding is a depthwise convolution with constant weights."""
    weight = torch.full((channels, 1, *kernel), 1.0 / (kernel[0] * kernel[1]), dtype=torch.float64)
    return Conv(
        weight, torch.zeros(channels, dtype=torch.float64), stride, (0, 0), (1, 1), channels, in_shape
    )
