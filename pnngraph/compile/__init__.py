"""Compiling training into graphs: strategies, the abstract graph, the kernels tasks run."""

from pnngraph.compile.reference import train_averaging_serial, train_serial
from pnngraph.compile.spec import TrainingSpec
from pnngraph.compile.strategies import DataParallel, Hybrid, ModelAveraging, Pipeline

__all__ = [
    "DataParallel",
    "Hybrid",
    "ModelAveraging",
    "Pipeline",
    "TrainingSpec",
    "train_averaging_serial",
    "train_serial",
]
