"""The SyncNet two-stream network (Chung & Zisserman 2016, "Out of time").

Two classes live here:

* :class:`SyncNet` has exactly the module layout of the reference ``SyncNetModel.S``, so the official
  ``syncnet_v2.model`` state dict (``netcnnaud.*``, ``netfcaud.*``, ``netcnnlip.*``, ``netfclip.*``) loads
  into it by name and shape. Its forward passes are the reference's, layer for layer.
* :class:`FastSyncNet` is what we run. It is derived from a loaded :class:`SyncNet` and computes the
  same function faster: BatchNorm is folded into the preceding convolution or linear layer (exact in
  eval mode), and the lip stream's 3-D convolutions become 2-D ones. The first lip convolution spans all
  5 frames with a temporal kernel of 5, so stacking the 5 frames as 15 input channels turns it into a
  plain 2-D convolution over the same sums; every later lip convolution has a temporal kernel of 1. 2-D
  convolutions in channels-last layout take oneDNN's fastest CPU path, which 3-D ones do not.

The numbers that define the model's inputs are module constants; the rest of the package uses them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

from .constants import (  # noqa: F401 - re-exported: the model's fixed numbers
    CROP_SIZE,
    CROP_SIZE_RANGE,
    EMBED_DIM,
    FPS,
    MFCC_PER_FRAME,
    MFCC_WINDOW,
    N_MFCC,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    WINDOW_FRAMES,
)

log = logging.getLogger(__name__)



def _conv_bn_relu(layers: list[nn.Module], conv: nn.Module, channels: int, bn: type[nn.Module]) -> None:
    layers += [conv, bn(channels), nn.ReLU(inplace=True)]


def _fc_head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, EMBED_DIM))


def _audio_trunk() -> nn.Sequential:
    """Audio CNN; indices must match the checkpoint (``netcnnaud.0`` ... ``netcnnaud.19``)."""
    layers: list[nn.Module] = []
    _conv_bn_relu(layers, nn.Conv2d(1, 64, 3, padding=1), 64, nn.BatchNorm2d)
    layers.append(nn.MaxPool2d(kernel_size=1, stride=1))
    _conv_bn_relu(layers, nn.Conv2d(64, 192, 3, padding=1), 192, nn.BatchNorm2d)
    layers.append(nn.MaxPool2d(kernel_size=3, stride=(1, 2)))
    _conv_bn_relu(layers, nn.Conv2d(192, 384, 3, padding=1), 384, nn.BatchNorm2d)
    _conv_bn_relu(layers, nn.Conv2d(384, 256, 3, padding=1), 256, nn.BatchNorm2d)
    _conv_bn_relu(layers, nn.Conv2d(256, 256, 3, padding=1), 256, nn.BatchNorm2d)
    layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
    _conv_bn_relu(layers, nn.Conv2d(256, 512, (5, 4)), 512, nn.BatchNorm2d)
    return nn.Sequential(*layers)


def _lip_trunk() -> nn.Sequential:
    """Lip CNN; indices must match the checkpoint (``netcnnlip.0`` ... ``netcnnlip.19``)."""
    layers: list[nn.Module] = []
    _conv_bn_relu(layers, nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), 96, nn.BatchNorm3d)
    layers.append(nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)))
    _conv_bn_relu(layers, nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), 256, nn.BatchNorm3d)
    layers.append(nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
    for _ in range(3):
        _conv_bn_relu(layers, nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, nn.BatchNorm3d)
    layers.append(nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)))
    _conv_bn_relu(layers, nn.Conv3d(256, 512, (1, 6, 6)), 512, nn.BatchNorm3d)
    return nn.Sequential(*layers)


class SyncNet(nn.Module):
    """The reference network, parameter for parameter (102 state-dict entries).

    Inputs follow the reference: lip windows ``(B, 3, 5, H, W)`` in BGR 0-255 floats with H = W = 224,
    audio windows ``(B, 1, 13, 20)`` of MFCCs. Both outputs are unnormalised ``(B, 1024)`` embeddings.
    """

    def __init__(self) -> None:
        super().__init__()
        # registration order = the checkpoint's key order
        self.netcnnaud = _audio_trunk()
        self.netfcaud = _fc_head()
        self.netfclip = _fc_head()
        self.netcnnlip = _lip_trunk()

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """Audio embedding of MFCC windows ``(B, 1, 13, 20)``."""
        out = self.netcnnaud(x)
        return self.netfcaud(out.reshape(out.shape[0], -1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """Lip embedding of frame windows ``(B, 3, 5, H, W)``."""
        out = self.netcnnlip(x)
        return self.netfclip(out.reshape(out.shape[0], -1))

    def forward_lipfeat(self, x: torch.Tensor) -> torch.Tensor:
        """The 512-d conv output of the lip stream, before the FC layers (reference ``forward_lipfeat``)."""
        out = self.netcnnlip(x)
        return out.reshape(out.shape[0], -1)


def _fold_bn(weight: torch.Tensor, bias: torch.Tensor, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm that follows a conv/linear into its weight and bias.

    y = gamma * (Wx + b - mean) / sqrt(var + eps) + beta  ==  (s W) x + (s (b - mean) + beta),
    with s = gamma / sqrt(var + eps). The per-channel factors are computed in float64; the weight is
    scaled in float32 (one rounding per element, and no float64 copy of the large kernels).
    """
    assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    new_w = weight.detach().float() * scale.float().reshape(shape)
    new_b = (bias.double() - bn.running_mean.double()) * scale + bn.bias.double()
    return new_w, new_b.float()


def _folded_conv2d(conv: nn.Module, bn: nn.Module) -> nn.Conv2d:
    """A Conv2d equal to ``bn(conv(x))``; a Conv3d is first flattened to 2-D.

    A Conv3d whose temporal kernel covers the whole (5-frame) input becomes a Conv2d over
    ``C_in * T`` channels ordered ``c * T + t``, which is how :func:`stack_window_channels` lays frames out.
    """
    weight, bias = _fold_bn(conv.weight, conv.bias, bn)
    if weight.dim() == 5:
        c_out, c_in, t, kh, kw = weight.shape
        weight = weight.reshape(c_out, c_in * t, kh, kw)
        stride, padding = conv.stride[1:], conv.padding[1:]
    else:
        stride, padding = conv.stride, conv.padding
    out = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), stride=stride, padding=padding,
                    device="meta")  # no throw-away random init: the folded tensors are assigned below
    out.weight, out.bias = nn.Parameter(weight, requires_grad=False), nn.Parameter(bias, requires_grad=False)
    return out


def _folded_linear(lin: nn.Linear, bn: nn.Module) -> nn.Linear:
    weight, bias = _fold_bn(lin.weight, lin.bias, bn)
    out = nn.Linear(lin.in_features, lin.out_features, device="meta")
    out.weight, out.bias = nn.Parameter(weight, requires_grad=False), nn.Parameter(bias, requires_grad=False)
    return out


def _fold_stream(trunk: nn.Sequential, head: nn.Sequential) -> tuple[nn.Sequential, nn.Sequential]:
    """Rebuild one stream with BN folded away and every 3-D layer made 2-D."""
    layers: list[nn.Module] = []
    mods = list(trunk)
    i = 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            layers.append(_folded_conv2d(m, mods[i + 1]))
            i += 2
            continue
        if isinstance(m, nn.MaxPool3d):
            # Temporal kernel 1, stride 1, padding 0: a 2-D pool on each time step.
            pad = m.padding if isinstance(m.padding, tuple) else (m.padding,) * 3
            layers.append(nn.MaxPool2d(m.kernel_size[1:], stride=m.stride[1:], padding=pad[1:]))
        elif isinstance(m, nn.MaxPool2d) and m.kernel_size in (1, (1, 1)):
            pass  # the audio trunk's 1x1 pool is the identity
        else:
            layers.append(m)
        i += 1
    last = nn.Linear(head[3].in_features, head[3].out_features, device="meta")
    last.weight = nn.Parameter(head[3].weight.detach().float().clone(), requires_grad=False)
    last.bias = nn.Parameter(head[3].bias.detach().float().clone(), requires_grad=False)
    fc = nn.Sequential(_folded_linear(head[0], head[1]), nn.ReLU(inplace=True), last)
    return nn.Sequential(*layers), fc


def stack_window_channels(frames: torch.Tensor) -> torch.Tensor:
    """``(B, 3, 5, H, W)`` -> ``(B, 15, H, W)`` with channel ``c * 5 + t``, the folded conv's layout."""
    b, c, t, h, w = frames.shape
    return frames.reshape(b, c * t, h, w)


class FastSyncNet(nn.Module):
    """Inference-only SyncNet with BN folded and the lip stream in 2-D (see module docstring).

    Build it with :meth:`from_syncnet`. It takes the same inputs as :class:`SyncNet` (lip windows may
    also be given pre-stacked as ``(B, 15, H, W)``) and returns the same embeddings to float32 rounding.
    """

    def __init__(self, aud: nn.Sequential, aud_fc: nn.Sequential, lip: nn.Sequential, lip_fc: nn.Sequential):
        super().__init__()
        self.aud, self.aud_fc, self.lip, self.lip_fc = aud, aud_fc, lip, lip_fc

    @classmethod
    def from_syncnet(cls, net: SyncNet) -> FastSyncNet:
        net = net.eval()
        with torch.no_grad():
            aud, aud_fc = _fold_stream(net.netcnnaud, net.netfcaud)
            lip, lip_fc = _fold_stream(net.netcnnlip, net.netfclip)
        fast = cls(aud, aud_fc, lip, lip_fc).eval()
        for p in fast.parameters():
            p.requires_grad_(False)
        return fast

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        out = self.aud(x)
        return self.aud_fc(out.reshape(out.shape[0], -1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            x = stack_window_channels(x)
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.lip(x)
        return self.lip_fc(out.reshape(out.shape[0], -1))


def expected_state_shapes() -> dict[str, tuple[int, ...]]:
    """Name -> shape of every entry the official checkpoint may hold (the 102 of the reference)."""
    return {k: tuple(v.shape) for k, v in SyncNet().state_dict().items()}


def build_syncnet(state: Mapping[str, torch.Tensor]) -> SyncNet:
    """A :class:`SyncNet` in eval mode holding ``state`` (already checked by ``weights.check_state_dict``).

    The tensors are adopted, not copied (the module is built on the meta device first), so loading costs
    one copy of the weights in memory. ``num_batches_tracked`` may be absent, as the reference loader
    allows; eval mode never reads it, and it is filled with zeros.
    """
    with torch.device("meta"):
        net = SyncNet()
    full = {}
    for name, ref in net.state_dict().items():
        full[name] = state[name] if name in state else torch.zeros(ref.shape, dtype=ref.dtype)
    net.load_state_dict(full, assign=True)
    return net.eval()


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when available (or asked for), else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
