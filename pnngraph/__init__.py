"""pnngraph: train neural networks in parallel as scheduled Dask task graphs.

>>> import pnngraph
>>> model = pnngraph.Sequential([pnngraph.Dense(2, 3)], input_shape=(2,))
>>> model.n_params
9
"""

from pnngraph import exceptions
from pnngraph.nn import (
    GELU,
    SGD,
    Adam,
    Context,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    MeanSquaredError,
    ReLU,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    TrainResult,
    activation,
    get_backend,
    train_serial,
)

__version__ = "0.1.0"

__all__ = [
    "GELU",
    "SGD",
    "Adam",
    "Context",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "MaxPool2D",
    "MeanSquaredError",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "Tanh",
    "TrainResult",
    "__version__",
    "activation",
    "exceptions",
    "get_backend",
    "train_serial",
]
