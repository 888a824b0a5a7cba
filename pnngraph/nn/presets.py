"""Ready-made models by name, for the command line, examples and benchmarks.

>>> model = mlp((64,), 10, hidden=(32,))
>>> [layer.kind for layer in model.layers]
['dense', 'relu', 'dense']
>>> cnn((1, 8, 8), 10).output_shape
(10,)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pnngraph.exceptions import ConfigError, UnknownNameError, check_int
from pnngraph.nn.blocks import Residual
from pnngraph.nn.conv import Conv2D, MaxPool2D
from pnngraph.nn.layers import Dense, Flatten, Layer, activation
from pnngraph.nn.model import Sequential


def mlp(
    input_shape: Sequence[int],
    n_outputs: int,
    *,
    hidden: Sequence[int] = (64,),
    act: str = "relu",
    seed: int = 0,
    dtype: str = "float64",
) -> Sequential:
    """Multi-layer perceptron: Flatten (if needed), then Dense + activation per hidden width."""
    shape = tuple(input_shape)
    layers: list[Layer] = [Flatten()] if len(shape) > 1 else []
    width = math.prod(shape)
    for h in hidden:
        try:
            check_int("hidden", h)
        except ConfigError:
            raise ConfigError("hidden", "positive integer widths", list(hidden)) from None
        layers += [Dense(width, h), activation(act)]
        width = h
    layers.append(Dense(width, n_outputs, init="glorot"))
    return Sequential(layers, input_shape=shape, seed=seed, dtype=dtype)


def cnn(
    input_shape: Sequence[int],
    n_outputs: int,
    *,
    channels: Sequence[int] = (8, 16),
    seed: int = 0,
    dtype: str = "float64",
) -> Sequential:
    """Small CNN: per entry of ``channels`` a 3x3 same-padded Conv2D, ReLU and 2x2 max pooling
    (pooling only while the image is at least 2x2), then Flatten and a Dense classifier."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ConfigError("input_shape", "(channels, height, width) for a CNN", shape)
    c, h, w = shape
    layers: list[Layer] = []
    for out in channels:
        layers += [Conv2D(c, out, 3, padding=1), activation("relu")]
        if h >= 2 and w >= 2:
            layers.append(MaxPool2D(2))
            h, w = h // 2, w // 2
        c = out
    layers += [Flatten(), Dense(c * h * w, n_outputs, init="glorot")]
    return Sequential(layers, input_shape=shape, seed=seed, dtype=dtype)


def resnet(
    input_shape: Sequence[int],
    n_outputs: int,
    *,
    channels: Sequence[int] = (16, 32),
    blocks: int = 1,
    seed: int = 0,
    dtype: str = "float64",
) -> Sequential:
    """Small residual CNN (He et al., 2016): a 3x3 Conv2D + ReLU stem, then per entry of
    ``channels`` ``blocks`` residual blocks ``x + conv(relu(conv(x)))``, each followed by a ReLU
    (the first block of a wider stage has a 1x1 convolution as its shortcut), and 2x2 max pooling
    while the image is at least 2x2; then Flatten and a Dense classifier."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ConfigError("input_shape", "(channels, height, width) for a ResNet", shape)
    check_int("blocks", blocks)
    if not channels:
        raise ConfigError("channels", "at least one width", list(channels))
    _, h, w = shape
    width = check_int("channels", channels[0])
    layers: list[Layer] = [Conv2D(width, 3, padding=1), activation("relu")]
    for out in channels:
        for b in range(blocks):
            shortcut = [Conv2D(out, 1)] if b == 0 and out != width else None
            body = [Conv2D(out, 3, padding=1), activation("relu"), Conv2D(out, 3, padding=1)]
            layers += [Residual(body, shortcut=shortcut), activation("relu")]
            width = out
        if h >= 2 and w >= 2:
            layers.append(MaxPool2D(2))
            h, w = h // 2, w // 2
    layers += [Flatten(), Dense(n_outputs, init="glorot")]
    return Sequential(layers, input_shape=shape, seed=seed, dtype=dtype)


PRESETS = {"mlp": mlp, "cnn": cnn, "resnet": resnet}


def preset(name: str, input_shape: Sequence[int], n_outputs: int, **options: object) -> Sequential:
    """The preset model called ``name`` ("mlp", "cnn" or "resnet") for the given shapes."""
    if name not in PRESETS:
        raise UnknownNameError("model", name, PRESETS)
    return PRESETS[name](input_shape, n_outputs, **options)  # type: ignore[operator]
