r"""Backbones for Colored MNIST: the MLP of IRM (Arjovsky et al., 2019) and
a small CNN. Both take a batch whose :obj:`x` holds images
:math:`(B, C, H, W)` and return embeddings :math:`(B, d)`."""
from __future__ import annotations

import math
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.stacked import linear
from .backbones import BACKBONES, BackboneSpec
from .union import ImageUnion, StackedEncoder


def _image_shape(input_shape: Sequence[int]) -> tuple:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"Expected an image shape (C, H, W), got {shape}")
    return shape


class IRMMLP(StackedEncoder):
    r"""IRM's Colored MNIST MLP without its output layer:
    ``flatten -> Linear -> ReLU -> Linear -> ReLU``, Xavier-uniform weights
    and zero biases as in IRM's ``main.py``. The width defaults to the
    script's default of 256 (IRM's tuned ``README`` run uses 390, which with
    HMA's default 16-dim label embedding and 4 heads gives a token size of 406,
    not divisible by 4).

    Args:
        input_shape (tuple): image shape :math:`(C, H, W)`, e.g.
            :obj:`(2, 14, 14)` for IRM's two-colour 14x14 digits.
        hidden_channels (int, optional): width of both hidden layers.
            (default: :obj:`256`)
    """
    def __init__(self, input_shape: Sequence[int], hidden_channels: int = 256):
        super().__init__()
        self.input_shape = _image_shape(input_shape)
        self.in_channels = math.prod(self.input_shape)
        self.hidden_channels = self.out_channels = hidden_channels
        self.lin1 = nn.Linear(self.in_channels, hidden_channels)
        self.lin2 = nn.Linear(hidden_channels, hidden_channels)
        self.reset_parameters()

    def reset_parameters(self):
        for lin in (self.lin1, self.lin2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward_stacked(self, P: Dict[str, Tensor], pre: str,
                        data: ImageUnion, noise, training: bool) -> Tensor:
        r"""Embeddings ``[S, B, hidden]`` of every seed's images."""
        x = data.x.flatten(2).to(P[pre + 'lin1.weight'].dtype)
        x = F.relu(linear(x, P[pre + 'lin1.weight'], P[pre + 'lin1.bias']))
        return F.relu(linear(x, P[pre + 'lin2.weight'],
                             P[pre + 'lin2.bias']))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.input_shape}, '
                f'{self.hidden_channels})')


class SmallCNN(StackedEncoder):
    r"""Three ``Conv3x3 -> BatchNorm -> ReLU`` blocks (32, 64, 128 channels,
    the first two followed by 2x2 max pooling) and global average pooling.

    Args:
        input_shape (tuple): image shape :math:`(C, H, W)`.
        channels (int, optional): channels of the first block; the others
            double it. (default: :obj:`32`)
    """
    def __init__(self, input_shape: Sequence[int], channels: int = 32):
        super().__init__()
        self.input_shape = _image_shape(input_shape)
        c_in = self.input_shape[0]
        widths = (channels, 2 * channels, 4 * channels)
        layers = []
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(c_in, width, 3, padding=1),
                       nn.BatchNorm2d(width), nn.ReLU()]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.out_channels = widths[-1]

    def reset_parameters(self):
        for module in self.net:
            if hasattr(module, 'reset_parameters'):
                module.reset_parameters()

    def forward_stacked(self, P: Dict[str, Tensor], pre: str,
                        data: ImageUnion, noise, training: bool) -> Tensor:
        r"""Embeddings ``[S, B, channels]`` of every seed's images. The
        seeds are channel groups of one batch ``[B, S * C, H, W]``: every
        seed convolves its own channels with its own filters, and one
        BatchNorm over the ``S * C`` channels is every seed's BatchNorm
        (images need no padding)."""
        S, B = data.S, data.B
        x = data.x.to(P[pre + 'net.0.weight'].dtype)
        x = x.transpose(0, 1).reshape(B, S * x.size(2), *x.shape[3:])
        for i, module in enumerate(self.net):
            x = _stacked_layer(module, P, f'{pre}net.{i}.', x, S, B,
                               training)
        return x

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.input_shape}, '
                f'{self.out_channels})')


def _stacked_layer(module: nn.Module, P: Dict[str, Tensor], m: str,
                   x: Tensor, S: int, B: int, training: bool) -> Tensor:
    # One layer of SmallCNN's net on the seeds' channel groups.
    if isinstance(module, nn.Conv2d):
        # One convolution per seed on its channels: a grouped convolution
        # (groups=S) takes another kernel than the seed's own for some
        # shapes (the first layer's 2 channels, torch 2.13 CPU) and would
        # make a seed's result depend on its group.
        w, b = P[m + 'weight'], P[m + 'bias']
        parts = x.chunk(S, dim=1)
        return torch.cat([F.conv2d(part, w[s], b[s], module.stride,
                                   module.padding, module.dilation)
                          for s, part in enumerate(parts)], dim=1)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if type(module) is not nn.BatchNorm2d and S == 1:
            return module(x)  # another kind (distributed): its own forward
        tracked = module.track_running_stats
        if training and tracked:
            P[m + 'num_batches_tracked'].add_(1)
        return F.batch_norm(
            x, P[m + 'running_mean'].view(-1) if tracked else None,
            P[m + 'running_var'].view(-1) if tracked else None,
            P[m + 'weight'].reshape(-1), P[m + 'bias'].reshape(-1),
            training or not tracked, module.momentum or 0.0, module.eps)
    if isinstance(module, nn.ReLU):
        return F.relu(x)
    if isinstance(module, nn.MaxPool2d):
        return F.max_pool2d(x, module.kernel_size, module.stride,
                            module.padding, module.dilation,
                            ceil_mode=module.ceil_mode)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return F.adaptive_avg_pool2d(x, module.output_size)
    if isinstance(module, nn.Flatten):
        return x.reshape(B, S, -1).transpose(0, 1)  # [S, B, d]
    raise NotImplementedError(f'SmallCNN: no stacked form of '
                              f'{type(module).__name__}')


BACKBONES.register(BackboneSpec('mlp', IRMMLP, 'MLP', inputs='image'))
BACKBONES.register(BackboneSpec('cnn', SmallCNN, 'CNN', inputs='image'))
