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
    GRU,
    LSTM,
    SGD,
    Adam,
    AdamW,
    AvgPool2D,
    Context,
    Conv2D,
    Dense,
    Dropout,
    EpochRecord,
    Flatten,
    GlobalAvgPool2D,
    History,
    MaxPool2D,
    MeanSquaredError,
    ReLU,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    TrainingResult,
    activation,
    get_backend,
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
    "GRU",
    "LSTM",
    "SGD",
    "Adam",
    "AdamW",
    "AvgPool2D",
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
    "GlobalAvgPool2D",
    "History",
    "Hybrid",
    "MaxPool2D",
    "MeanSquaredError",
    "ModelAveraging",
    "Pipeline",
    "ReLU",
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
    "train_averaging_serial",
    "train_serial",
]
