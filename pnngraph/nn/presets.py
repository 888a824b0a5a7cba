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

from pnngraph.exceptions import ConfigError, UnknownNameError, check_bool, check_int
from pnngraph.nn.attention import (
    Embedding,
    LayerNorm,
    MultiHeadSelfAttention,
    PositionalEmbedding,
)
from pnngraph.nn.batchnorm import BatchNorm
from pnngraph.nn.blocks import Residual
from pnngraph.nn.conv import Conv2D, MaxPool2D
from pnngraph.nn.layers import Dense, Flatten, Layer, activation
from pnngraph.nn.model import Sequential
from pnngraph.nn.recurrent import LSTM


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
    batchnorm: bool = False,
    seed: int = 0,
    dtype: str = "float64",
) -> Sequential:
    """Small residual CNN (He et al., 2016): a 3x3 Conv2D + ReLU stem, then per entry of
    ``channels`` ``blocks`` residual blocks ``x + conv(relu(conv(x)))``, each followed by a ReLU
    (the first block of a wider stage has a 1x1 convolution as its shortcut), and 2x2 max pooling
    while the image is at least 2x2; then Flatten and a Dense classifier. ``batchnorm=True``
    puts a BatchNorm after every convolution (which then has no bias): such a model trains with
    DataParallel or ModelAveraging, not in a pipeline."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ConfigError("input_shape", "(channels, height, width) for a ResNet", shape)
    check_int("blocks", blocks)
    if not channels:
        raise ConfigError("channels", "at least one width", list(channels))
    norm = check_bool("batchnorm", batchnorm)

    def conv(out: int, k: int, padding: int = 0) -> list[Layer]:
        return [Conv2D(out, k, padding=padding, bias=not norm), *([BatchNorm()] if norm else [])]

    _, h, w = shape
    width = check_int("channels", channels[0])
    layers: list[Layer] = [*conv(width, 3, 1), activation("relu")]
    for out in channels:
        for b in range(blocks):
            shortcut = conv(out, 1) if b == 0 and out != width else None
            body = [*conv(out, 3, 1), activation("relu"), *conv(out, 3, 1)]
            layers += [Residual(body, shortcut=shortcut), activation("relu")]
            width = out
        if h >= 2 and w >= 2:
            layers.append(MaxPool2D(2))
            h, w = h // 2, w // 2
    layers += [Flatten(), Dense(n_outputs, init="glorot")]
    return Sequential(layers, input_shape=shape, seed=seed, dtype=dtype)


def transformer(
    input_shape: Sequence[int],
    n_outputs: int,
    *,
    vocab: int | None = None,
    width: int = 64,
    heads: int = 4,
    blocks: int = 2,
    dropout: float = 0.0,
    seed: int = 0,
    dtype: str = "float64",
) -> Sequential:
    """Decoder-only Transformer language model over sequences of ``T`` token ids (``input_shape
    (T,)``): token and learned positional embeddings of ``width``, then ``blocks`` pre-norm
    blocks ``x + attention(layernorm(x))`` (causal, ``heads`` heads, attention ``dropout``) and
    ``x + dense(gelu(dense(layernorm(x))))`` (4 x width inside), a final LayerNorm and a Dense
    to ``n_outputs`` logits at every position. ``vocab`` defaults to ``n_outputs`` (a language
    model predicts the tokens it reads)."""
    shape = tuple(input_shape)
    if len(shape) != 1:
        raise ConfigError("input_shape", "(T,) token ids for a Transformer", shape)
    check_int("blocks", blocks)
    layers: list[Layer] = [Embedding(vocab or n_outputs, width), PositionalEmbedding(shape[0])]
    for _ in range(blocks):
        layers += [
            Residual([LayerNorm(), MultiHeadSelfAttention(heads, causal=True, dropout=dropout)]),
            Residual([LayerNorm(), Dense(4 * width), activation("gelu"), Dense(width)]),
        ]
    layers += [LayerNorm(), Dense(n_outputs, init="glorot")]
    return Sequential(layers, input_shape=shape, seed=seed, dtype=dtype)


def lstm(
    input_shape: Sequence[int],
    n_outputs: int,
    *,
    hidden: Sequence[int] = (64,),
    seed: int = 0,
    dtype: str = "float64",
) -> Sequential:
    """Sequence classifier over samples ``(T, features)``: stacked LSTMs of the ``hidden``
    widths (each but the last returning its whole sequence), then a Dense classifier on the
    last state."""
    shape = tuple(input_shape)
    if len(shape) != 2:
        raise ConfigError("input_shape", "(T, features) sequences for an LSTM", shape)
    widths = list(hidden)
    if not widths:
        raise ConfigError("hidden", "at least one LSTM width", widths)
    layers: list[Layer] = [LSTM(check_int("hidden", h), return_sequences=i < len(widths) - 1)
                           for i, h in enumerate(widths)]
    layers.append(Dense(n_outputs, init="glorot"))
    return Sequential(layers, input_shape=shape, seed=seed, dtype=dtype)


PRESETS = {"mlp": mlp, "cnn": cnn, "resnet": resnet, "transformer": transformer, "lstm": lstm}


def preset(name: str, input_shape: Sequence[int], n_outputs: int, **options: object) -> Sequential:
    """The preset model called ``name`` (a key of :data:`PRESETS`) for the given shapes."""
    if name not in PRESETS:
        raise UnknownNameError("model", name, PRESETS)
    return PRESETS[name](input_shape, n_outputs, **options)  # type: ignore[operator]
