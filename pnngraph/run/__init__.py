"""Running training graphs: lowering to Dask tasks, the collection, chunked fitting."""

from pnngraph.run.collection import TrainingGraph, build
from pnngraph.run.fit import fit

__all__ = ["TrainingGraph", "build", "fit"]
