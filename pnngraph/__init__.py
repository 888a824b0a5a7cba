"""pnngraph: train neural networks in parallel as scheduled Dask task graphs.

>>> import pnngraph
>>> model = pnngraph.Sequential([pnngraph.Dense(2, 3)], input_shape=(2,))
>>> model.n_params
9
"""

from pnngraph import exceptions
from pnngraph.compile import (
    DataParallel,
    Hybrid,
    ModelAveraging,
    Pipeline,
    TrainingSpec,
    train_averaging_serial,
    train_serial,
)
from pnngraph.nn import (
    GELU,
    SGD,
    Adam,
    AdamW,
    Context,
    Conv2D,
    Dense,
    Dropout,
    EpochRecord,
    Flatten,
    History,
    Layer,
    MaxPool2D,
    MeanSquaredError,
    Parallel,
    ReLU,
    Residual,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    TrainingResult,
    activation,
    get_backend,
    register_layer,
)
from pnngraph.run import (
    BestCheckpoint,
    Callback,
    EarlyStopping,
    TrainingGraph,
    build,
    calibrate,
    fit,
    load_checkpoint,
)

__version__ = "0.1.0"

__all__ = [
    "GELU",
    "SGD",
    "Adam",
    "AdamW",
    "BestCheckpoint",
    "Callback",
    "Context",
    "Conv2D",
    "DataParallel",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "EpochRecord",
    "Flatten",
    "History",
    "Hybrid",
    "Layer",
    "MaxPool2D",
    "MeanSquaredError",
    "ModelAveraging",
    "Parallel",
    "Pipeline",
    "ReLU",
    "Residual",
    "Sequential",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "Tanh",
    "TrainingGraph",
    "TrainingResult",
    "TrainingSpec",
    "__version__",
    "activation",
    "build",
    "calibrate",
    "exceptions",
    "fit",
    "get_backend",
    "load_checkpoint",
    "register_layer",
    "train_averaging_serial",
    "train_serial",
]
