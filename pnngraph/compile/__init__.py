"""Compiling training into graphs: strategies, the abstract graph, the kernels tasks run."""

from pnngraph.compile.reference import train_averaging_serial
from pnngraph.compile.strategies import DataParallel, Hybrid, ModelAveraging, Pipeline

__all__ = ["DataParallel", "Hybrid", "ModelAveraging", "Pipeline", "train_averaging_serial"]
