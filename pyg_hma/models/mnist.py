r"""Backbones for Colored MNIST: the MLP of IRM (Arjovsky et al., 2019) and
a small CNN. Both take a batch whose :obj:`x` holds images
:math:`(B, C, H, W)` and return embeddings :math:`(B, d)`."""
from __future__ import annotations

import math
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import BACKBONES, BackboneSpec


def _image_shape(input_shape: Sequence[int]) -> tuple:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"Expected an image shape (C, H, W), got {shape}")
    return shape


class IRMMLP(nn.Module):
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

    def forward(self, data) -> Tensor:
        x = data.x.flatten(1).to(self.lin1.weight.dtype)
        return F.relu(self.lin2(F.relu(self.lin1(x))))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.input_shape}, '
                f'{self.hidden_channels})')


class SmallCNN(nn.Module):
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

    def forward(self, data) -> Tensor:
        return self.net(data.x.to(self.net[0].weight.dtype))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.input_shape}, '
                f'{self.out_channels})')


BACKBONES.register(BackboneSpec('mlp', IRMMLP, 'MLP', inputs='image'))
BACKBONES.register(BackboneSpec('cnn', SmallCNN, 'CNN', inputs='image'))
