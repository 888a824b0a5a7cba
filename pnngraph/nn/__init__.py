"""The model library: layers, losses, optimizers, Sequential, the batch order and the result of a
training run. (The serial reference trainer, ``train_serial``, lives with the other oracles in
:mod:`pnngraph.compile.reference`; ``pnngraph.nn.train_serial`` still finds it.)"""

from typing import Any

from pnngraph.nn.attention import Embedding, LayerNorm, MultiHeadSelfAttention, PositionalEmbedding
from pnngraph.nn.backend import Backend, get_backend
from pnngraph.nn.batchnorm import BatchNorm
from pnngraph.nn.blocks import Parallel, Residual
from pnngraph.nn.conv import AvgPool2D, Conv2D, GlobalAvgPool2D, MaxPool2D
from pnngraph.nn.layers import (
    GELU,
    Context,
    Dense,
    Dropout,
    Flatten,
    Layer,
    ReLU,
    Sigmoid,
    Tanh,
    activation,
)
from pnngraph.nn.losses import Loss, MeanSquaredError, SoftmaxCrossEntropy, get_loss
from pnngraph.nn.model import Sequential, register_layer
from pnngraph.nn.optimizers import SGD, Adam, AdamW, Optimizer, get_optimizer
from pnngraph.nn.recurrent import GRU, LSTM
from pnngraph.nn.train import EpochRecord, History, TrainingResult, batch_indices

__all__ = [
    "GELU",
    "GRU",
    "LSTM",
    "SGD",
    "Adam",
    "AdamW",
    "AvgPool2D",
    "Backend",
    "BatchNorm",
    "Context",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "EpochRecord",
    "Flatten",
    "GlobalAvgPool2D",
    "History",
    "Layer",
    "LayerNorm",
    "Loss",
    "MaxPool2D",
    "MeanSquaredError",
    "MultiHeadSelfAttention",
    "Optimizer",
    "Parallel",
    "PositionalEmbedding",
    "ReLU",
    "Residual",
    "Sequential",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "Tanh",
    "TrainingResult",
    "activation",
    "batch_indices",
    "get_backend",
    "get_loss",
    "get_optimizer",
    "register_layer",
    "train_serial",
]


def __getattr__(name: str) -> Any:
    if name == "train_serial":  # its home is one floor up; imported on first use
        from pnngraph.compile.reference import train_serial

        return train_serial
    raise AttributeError(f"module 'pnngraph.nn' has no attribute {name!r}")
