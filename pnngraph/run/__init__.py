"""Running training graphs: lowering to Dask tasks, the collection, chunked fitting, checkpoints."""

from pnngraph.run.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from pnngraph.run.collection import TrainingGraph, build
from pnngraph.run.fit import fit

__all__ = [
    "Checkpoint",
    "TrainingGraph",
    "build",
    "fit",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]
