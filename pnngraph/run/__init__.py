"""Running training graphs: the pipeline (prepare -> start -> chunk graph), lowering to Dask, the
collection, chunked fitting and its callbacks, calibration, checkpoints, sessions and the
dashboard page."""

from pnngraph.run.calibrate import calibrate
from pnngraph.run.callbacks import BestCheckpoint, Callback, EarlyStopping
from pnngraph.run.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from pnngraph.run.collection import PlacementWarning, TrainingGraph
from pnngraph.run.fit import ChunkReport, fit
from pnngraph.run.pipeline import build

__all__ = [
    "BestCheckpoint",
    "Callback",
    "Checkpoint",
    "ChunkReport",
    "EarlyStopping",
    "PlacementWarning",
    "TrainingGraph",
    "build",
    "calibrate",
    "fit",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]
