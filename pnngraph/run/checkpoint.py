"""Checkpoint files: the state of a training run at a step, in one ``.npz`` file.

A run's state is its parameters, its optimizer state, the losses so far, and where it stands:
the step reached and the seed. Nothing else is random (batch order and dropout masks are pure
functions of seed, step and sample index), so these are enough to continue the run bitwise.
Model averaging adds each replica's state (parameters, optimizer state, weighted local losses),
since between two averages the replicas differ. One file per checkpoint, no pickles::

    ckpt-00000300.npz
        param/{i}/{name}                 the model's parameters, layer i
        buffer/{i}/{name}                its buffers (BatchNorm's running statistics)
        opt/{entry}/{i}/{name}           optimizer state arrays ("velocity", "m", "v", ...)
        losses                           global loss of every step so far (float64)
        replica/{r}/param|opt|losses|buffer  model averaging: replica r's own state
        __pnngraph__                     JSON (uint8): format and version, step, seed, the
                                         model config, the optimizer state's other entries
                                         (step counter, entries that are None), run config,
                                         the history of the epochs so far (fit's records;
                                         absent in files of older versions: read as empty),
                                         the fingerprint of the training data
                                         (:func:`data_fingerprint`; absent in older files)

Writes are atomic (a temporary file in the same folder, then ``os.replace``) and only the
newest ``keep`` checkpoints are kept. A run's ``config`` is its
:meth:`~pnngraph.compile.spec.TrainingSpec.to_json`. Reading checks the metadata first, then
the name, shape and dtype of every array against what the metadata and the architecture imply,
from the arrays' headers (:class:`~pnngraph.npzfile.NpzArchive`): nothing is decompressed
before it is known to be what a checkpoint holds.

The policy of a run (:class:`CheckpointPolicy`, used by :func:`pnngraph.fit`): where and how
often to write, and which checkpoint a resumed run continues from, refused when it comes from
another run (a different architecture, a spec that differs in a field that changes the bits, or
other training data).

>>> import tempfile
>>> from pnngraph.nn import Dense, Sequential, SGD
>>> model = Sequential([Dense(2, 2)], input_shape=(2,))
>>> with tempfile.TemporaryDirectory() as folder:
...     path = save_checkpoint(folder, model=model, opt_state=SGD(0.1).init(model.params),
...                            step=3, seed=0, losses=[0.9, 0.8, 0.7], config={"batch_size": 8})
...     ckpt = load_checkpoint(folder)
>>> path.name
'ckpt-00000003.npz'
>>> ckpt.step, ckpt.opt_state, ckpt.losses.tolist(), ckpt.config
(3, {'step': 0, 'velocity': None}, [0.9, 0.8, 0.7], {'batch_size': 8})
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from dask.base import is_dask_collection, tokenize

from pnngraph.compile.kernels import StageState
from pnngraph.compile.spec import TrainingSpec
from pnngraph.compile.strategies import DataParallel, strategy_from_repr
from pnngraph.exceptions import ConfigError, ModelFileError, check_int
from pnngraph.nn.backend import to_numpy
from pnngraph.nn.model import FORMAT as MODEL_FORMAT
from pnngraph.nn.model import Sequential
from pnngraph.nn.optimizers import State
from pnngraph.nn.train import History
from pnngraph.npzfile import META, NpzArchive, write_npz

FORMAT = "pnngraph-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"ckpt-(\d{8,})\.npz")


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A run's state at ``step``, as :func:`load_checkpoint` reads it.

    Attributes
    ----------
    model : Sequential
        The parameters at ``step`` (model averaging: the average of the replicas, as the run
        would have returned had it stopped at ``step``).
    opt_state : dict
        The optimizer state (model averaging: the first replica's).
    step : int
        Steps done; the run continues with step ``step``.
    seed : int
    losses : numpy.ndarray
        Global loss of each of the ``step`` steps.
    config : dict
        The run's options as the writer gave them (JSON types).
    replicas : tuple of StageState
        Model averaging: each replica's parameters, optimizer state and weighted losses.
    path : Path or None
        The file it was read from.
    history : History
        The per-epoch records of the run up to ``step`` (empty in files written without).
    fingerprint : str or None
        The fingerprint of the run's training data (:func:`data_fingerprint`; ``None`` in files
        written without).
    """

    model: Sequential
    opt_state: State
    step: int
    seed: int
    losses: np.ndarray
    config: dict[str, Any]
    replicas: tuple[StageState, ...] = ()
    path: Path | None = field(default=None)
    history: History = field(default_factory=History)
    fingerprint: str | None = None

    def spec_for(self, spec: TrainingSpec, adapt: bool = False) -> TrainingSpec:
        """``spec`` as it continues from this checkpoint: a strategy the run was to choose
        (``"auto"``, or shards sized to the workers, ``DataParallel("auto")``) is the one this
        checkpoint's run chose, and so is a fan-in the run was to choose, so the resumed steps
        have the same bits. An adaptive run (``adapt``) of ``DataParallel(S)`` goes on with the
        weights its S shards had at the checkpoint."""
        fan_in = self.config.get("fan_in")
        if spec.fan_in == "auto" and fan_in != "auto" and isinstance(fan_in, int):
            spec = replace(spec, fan_in=fan_in)
        recorded = self.config.get("strategy")
        if not isinstance(recorded, str):
            return spec
        if spec.strategy.chooses:
            return replace(spec, strategy=strategy_from_repr(recorded))
        asked = spec.strategy
        if isinstance(asked, DataParallel) and recorded.startswith("DataParallel("):
            chosen = strategy_from_repr(recorded)
            if isinstance(chosen, DataParallel) and not chosen.auto and (
                    asked.auto or (adapt and chosen.shards == asked.shards)):
                return replace(spec, strategy=chosen)
        return spec


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint at ``step``.

    >>> checkpoint_name(42)
    'ckpt-00000042.npz'
    """
    return f"ckpt-{step:08d}.npz"


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint file in ``directory``, oldest first (none if the
    directory does not exist)."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.fullmatch(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint file in ``directory`` (highest step), or ``None``."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


class SkippedCheckpointWarning(UserWarning):
    """A checkpoint that does not load was passed over for an older one."""


def newest_usable(directory: str | os.PathLike[str]) -> Checkpoint | None:
    """The newest checkpoint in ``directory`` that loads and verifies (``None`` when there is
    none at all); each newer one that does not is skipped with a
    :class:`SkippedCheckpointWarning` naming it and why. When none loads, the newest one's
    :class:`ModelFileError` is raised."""
    found = list_checkpoints(directory)
    first: ModelFileError | None = None
    for _, path in reversed(found):
        try:
            return load_checkpoint(path)
        except ModelFileError as err:
            first = first or err
            warnings.warn(f"skipped checkpoint {path}: {' '.join(str(err).split())}",
                          SkippedCheckpointWarning, stacklevel=2)
    if first is not None:
        raise first
    return None


def remove_stale_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that writes killed midway left in a checkpoint directory
    (a finished write renames its file; a failed one deletes it); returns what was deleted."""
    folder = Path(directory)
    stale = sorted(folder.glob(".ckpt-*.tmp")) if folder.is_dir() else []
    for path in stale:
        with contextlib.suppress(OSError):
            path.unlink()
    return stale


# ---------------------------------------------------------------------------------- writing
def save_checkpoint(
    directory: str | os.PathLike[str],
    *,
    model: Sequential,
    opt_state: State,
    step: int,
    seed: int,
    losses: Sequence[float] | np.ndarray,
    config: dict[str, Any],
    replicas: Sequence[StageState] = (),
    keep: int | None = 3,
    history: History | None = None,
    fingerprint: str | None = None,
) -> Path:
    """Write the state of a run at ``step`` to ``directory/ckpt-{step:08d}.npz``.

    Parameters
    ----------
    directory : path
        Created if missing.
    model, opt_state, step, seed, losses
        The run's state; arrays may live on a device (they are copied to the host).
    config : dict
        The run's options, JSON-serialisable; :func:`load_checkpoint` returns it as it was.
    replicas : sequence of StageState
        Model averaging: every replica's state.
    keep : int or None
        How many checkpoints to keep in ``directory`` (newest by step); ``None`` keeps all.
    history : History, optional
        The run's per-epoch records so far (:func:`pnngraph.fit` gives them).
    fingerprint : str, optional
        The fingerprint of the run's training data (:func:`data_fingerprint`).

    Returns
    -------
    Path
        The file written. It appears whole or not at all: the arrays go to a temporary file in
        the same directory, which then replaces the target.
    """
    check_int("step", step, low=0)
    if keep is not None:
        check_int("keep", keep)
    if model.input_shape is None or len(model.params) != len(model.layers):
        raise ConfigError("model", "a built model with parameters", model)
    arrays: dict[str, np.ndarray] = {}
    meta_opt = _put_state(arrays, "", model.params, opt_state, losses, model.buffers)
    meta_replicas = [
        _put_state(arrays, f"replica/{r}/", s.params, s.opt_state, s.losses, s.buffers)
        for r, s in enumerate(replicas)
    ]
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "step": int(step),
        "seed": int(seed),
        "model": model.config(),
        "opt_state": meta_opt,
        "replicas": meta_replicas,
        "config": config,
        "history": [] if history is None else history.to_json(),
    }
    if fingerprint is not None:
        meta["fingerprint"] = fingerprint
    try:
        text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ConfigError("config", "JSON-serialisable values", f"{err}") from None
    arrays[META] = np.frombuffer(text.encode(), np.uint8)

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    target = write_npz(folder / checkpoint_name(int(step)), arrays)
    if keep is not None:
        for _, old in list_checkpoints(folder)[:-keep]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
    return target


def _put_state(
    arrays: dict[str, np.ndarray],
    prefix: str,
    params: Sequence[dict[str, Any]],
    opt_state: State,
    losses: Sequence[float] | np.ndarray,
    buffers: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Store params, optimizer arrays, losses and buffers under ``prefix``; return the
    optimizer state's description (its non-array entries and the layout of its arrays)."""
    for kind, layers in (("param", params), ("buffer", buffers)):
        for i, layer in enumerate(layers):
            for k, v in layer.items():
                arrays[f"{prefix}{kind}/{i}/{k}"] = np.asarray(to_numpy(v))
    arrays[f"{prefix}losses"] = np.asarray(losses, dtype=np.float64).reshape(-1)
    if not isinstance(opt_state, dict):
        raise ConfigError("opt_state", "a dict (an optimizer's state)", type(opt_state).__name__)
    described: dict[str, Any] = {}
    for name, value in opt_state.items():
        if value is None:
            described[name] = {"type": "none"}
        elif isinstance(value, bool):
            described[name] = {"type": "bool", "value": value}
        elif isinstance(value, int | np.integer):
            described[name] = {"type": "int", "value": int(value)}
        elif isinstance(value, float | np.floating):
            described[name] = {"type": "float", "value": float(value)}
        elif isinstance(value, list) and all(isinstance(layer, dict) for layer in value):
            described[name] = {"type": "layers", "keys": [list(layer) for layer in value]}
            for i, layer in enumerate(value):
                for k, a in layer.items():
                    arrays[f"{prefix}opt/{name}/{i}/{k}"] = np.asarray(to_numpy(a))
        else:
            raise ConfigError(
                f"opt_state[{name!r}]", "None, a number or a list of dicts of arrays",
                type(value).__name__,
            )
    return described


# ---------------------------------------------------------------------------------- reading
def load_checkpoint(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> Checkpoint:
    """Read a checkpoint file, or the newest checkpoint of a directory.

    ``max_bytes`` bounds the bytes its arrays may declare
    (:data:`pnngraph.npzfile.MAX_BYTES` by default).

    Raises
    ------
    ModelFileError
        No such file, a directory without checkpoints, a file that is not a pnngraph
        checkpoint, or a damaged one; ``reason`` says which. Nothing in the file is executed:
        arrays are read with ``allow_pickle=False`` and the metadata is JSON. Nothing is
        decompressed before the metadata has said what the arrays must be and their headers
        agree.
    """
    where = Path(path)
    if where.is_dir():
        newest = latest_checkpoint(where)
        if newest is None:
            raise ModelFileError(where, "the directory holds no checkpoint (ckpt-*.npz)")
        where = newest
    with NpzArchive(where, max_bytes=max_bytes) as archive:
        meta = archive.metadata()
        kind = meta.get("format")
        if kind == MODEL_FORMAT:
            raise ModelFileError(where, "it holds a model (Sequential.save) but no training "
                                        "state: read it with Sequential.load")
        if kind != FORMAT:
            raise ModelFileError(where, f"unknown format {kind!r}")
        version = meta.get("version")
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise ModelFileError(where, f"format version {version!r} (this pnngraph reads "
                                        f"1 to {FORMAT_VERSION})")
        try:
            return _decode(where, meta, archive)
        except ModelFileError:
            raise
        except Exception as err:
            raise ModelFileError(where, f"bad checkpoint contents: {err}") from None


def _decode(path: Path, meta: dict[str, Any], archive: NpzArchive) -> Checkpoint:
    step, seed = meta["step"], meta["seed"]
    if not isinstance(step, int) or step < 0 or not isinstance(seed, int):
        raise ModelFileError(path, f"bad step {step!r} or seed {seed!r}")
    config = meta["config"]
    if not isinstance(config, dict):
        raise ModelFileError(path, f"the run config is a {type(config).__name__}, not a dict")
    fingerprint = meta.get("fingerprint")  # older files hold none
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise ModelFileError(path, "the data fingerprint is not a string (got "
                                   f"{type(fingerprint).__name__})")
    model = Sequential.from_config(meta["model"])
    expected = [{k: (v.shape, v.dtype) for k, v in layer.items()} for layer in model.params]
    buffers = [{k: (v.shape, v.dtype) for k, v in layer.items()} for layer in model.buffers]

    parts = [("", meta["opt_state"])] + [
        (f"replica/{r}/", described) for r, described in enumerate(meta["replicas"])]

    def states(files: dict[str, Any]) -> list[Any]:
        """The run's state, then each replica's, from ``files`` (popped from it): member
        headers, which checks them before anything is read, then the arrays."""
        found = [_take_state(path, files, prefix, expected, described, step, buffers)
                 for prefix, described in parts]
        if files:
            raise ModelFileError(path, f"unexpected arrays {sorted(files)[:5]}")
        return found

    names = [name for name in archive.members if name != META]
    states({name: archive.members[name] for name in names})
    (params, opt_state, losses, model.buffers), *others = states(archive.read(names))
    replicas = [StageState(p, o, tuple(float(v) for v in lo), b) for p, o, lo, b in others]
    model.params = params
    history = History.from_json(meta.get("history", []))  # older files hold none
    return Checkpoint(model, opt_state, step, seed, losses, config, tuple(replicas), path,
                      history, fingerprint)


def _take_state(
    path: Path,
    files: dict[str, Any],
    prefix: str,
    expected: list[dict[str, tuple[tuple[int, ...], np.dtype[Any]]]],
    described: dict[str, Any],
    step: int,
    buffers: list[dict[str, tuple[tuple[int, ...], np.dtype[Any]]]],
) -> tuple[list[dict[str, np.ndarray]], State, np.ndarray, list[dict[str, np.ndarray]]]:
    """Remove and check the arrays of one state (params, optimizer state, losses, buffers):
    ``files`` maps names to arrays, or to their headers (:class:`~pnngraph.npzfile.Member`)."""

    def take(name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
        if name not in files:
            raise ModelFileError(path, f"array {name!r} is missing")
        a = files.pop(name)
        if a.shape != shape or a.dtype != dtype:
            raise ModelFileError(
                path, f"array {name!r}: expected {dtype}{list(shape)}, got {a.dtype}{list(a.shape)}"
            )
        return a

    params = [
        {k: take(f"{prefix}param/{i}/{k}", shape, dtype) for k, (shape, dtype) in layer.items()}
        for i, layer in enumerate(expected)
    ]
    kept = [
        {k: take(f"{prefix}buffer/{i}/{k}", shape, dtype) for k, (shape, dtype) in layer.items()}
        for i, layer in enumerate(buffers)
    ]
    losses = take(f"{prefix}losses", (step,), np.dtype(np.float64))
    opt_state: State = {}
    for name, d in described.items():
        kind = d["type"]
        if kind == "none":
            opt_state[name] = None
        elif kind in ("bool", "int", "float"):
            value = d["value"]
            want = {"bool": bool, "int": int, "float": float | int}[kind]
            if not isinstance(value, want) or (kind != "bool" and isinstance(value, bool)):
                raise ModelFileError(path, f"optimizer entry {name!r}: bad {kind} {value!r}")
            opt_state[name] = float(value) if kind == "float" else value
        elif kind == "layers":
            keys = d["keys"]
            if len(keys) != len(expected):
                raise ModelFileError(
                    path, f"optimizer entry {name!r}: {len(keys)} layers for a model of "
                          f"{len(expected)}"
                )
            opt_state[name] = [
                {k: take(f"{prefix}opt/{name}/{i}/{k}", *expected[i][k]) for k in layer_keys}
                for i, layer_keys in enumerate(keys)
            ]
        else:
            raise ModelFileError(path, f"optimizer entry {name!r} of unknown type {kind!r}")
    return params, opt_state, losses, kept


# ----------------------------------------------------------------------------------- policy
@dataclass(frozen=True)
class CheckpointPolicy:
    """Where a run writes checkpoints (``directory``, ``None``: nowhere), every how many steps
    (``every``; ``None``: at every chunk end), whether it continues from the newest one, and
    the fingerprint of its training data (``fingerprint``, :func:`data_fingerprint`), which
    every checkpoint records and a resumed run must match (``None``: neither)."""

    directory: Path | None = None
    every: int | None = None
    resume: bool = False
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        if self.every is not None:
            try:
                check_int("checkpoint_every", self.every)
            except ConfigError:
                raise ConfigError("checkpoint_every", "a positive integer (steps)",
                                  self.every) from None
            if self.directory is None:
                raise ConfigError("checkpoint_every", "a checkpoint_dir to write to", self.every)
        if self.directory is not None:
            # the first checkpoint is written after a chunk ran: a path that cannot be one
            # (a file, or below a file) is refused before
            existing = next(p for p in (self.directory, *self.directory.parents) if p.exists())
            if not existing.is_dir() or not os.access(existing, os.W_OK):
                raise ConfigError("checkpoint_dir", "a directory this process can write to (or "
                                  "a path to make one at)", os.fspath(self.directory))
        if not isinstance(self.resume, bool):
            raise ConfigError("resume", "True or False", self.resume)
        if self.resume and self.directory is None:
            raise ConfigError("resume", "a checkpoint_dir to resume from", None)

    def due(self, step: int, total: int) -> bool:
        """Whether a chunk ending at ``step`` writes a checkpoint."""
        return self.directory is not None and (
            step >= total or self.every is None or step % self.every == 0)

    def resume_point(self, model: Sequential, spec: TrainingSpec,
                     adapt: bool = False) -> Checkpoint | None:
        """The checkpoint to continue from (``None``: start at step 0), checked against the run:
        the same architecture, the same bits (:meth:`TrainingSpec.differences`), the same
        training data (where both the checkpoint and this policy have its fingerprint), no more
        steps done than the run has."""
        if self.directory is None:
            return None
        newest = latest_checkpoint(self.directory)
        if newest is None:
            return None
        if not self.resume:
            raise ConfigError("checkpoint_dir", "a directory without checkpoints (or a resumed "
                              f"run, to continue from {newest.name})", os.fspath(self.directory))
        remove_stale_files(self.directory)  # this run owns the directory now
        ckpt = newest_usable(self.directory)
        if ckpt is None:
            return None
        where = f"as in checkpoint {ckpt.path}"
        if _architecture(ckpt.model.config()) != _architecture(model.config()):
            raise ConfigError("model", f"the architecture {_describe(ckpt.model)} {where}",
                              _describe(model))
        spec = ckpt.spec_for(spec, adapt)
        differ = spec.differences(ckpt.config)
        if differ:
            mine = spec.to_json()
            raise ConfigError(", ".join(differ),
                              ", ".join(repr(ckpt.config[f]) for f in differ) + f" {where}",
                              mine[differ[0]] if len(differ) == 1 else [mine[f] for f in differ])
        if None not in (ckpt.fingerprint, self.fingerprint) and \
                ckpt.fingerprint != self.fingerprint:
            raise ConfigError("data", f"the same X and y (fingerprint {ckpt.fingerprint}) "
                                      f"{where}", f"other data (fingerprint {self.fingerprint})")
        if ckpt.step > spec.steps:
            raise ConfigError("steps", f"at least the {ckpt.step} steps done {where}", spec.steps)
        return ckpt

    def save(self, result: Any, spec: TrainingSpec, step: int) -> Path:
        """Write a run's state at ``step`` (``result``: its :func:`finalize` of host states)."""
        if self.directory is None:
            raise ConfigError("checkpoint_dir", "a directory to write checkpoints to", None)
        _, replicas = spec.strategy.unslot(result.states)
        return save_checkpoint(self.directory, model=result.model, opt_state=result.opt_state,
                               step=step, seed=spec.seed, losses=result.losses,
                               config=spec.to_json(), replicas=tuple(replicas),
                               history=result.history, fingerprint=self.fingerprint)


def data_fingerprint(X: Any, y: Any) -> str:
    """A fingerprint of training data ``(X, y)``, which checkpoints record so that a resumed run
    refuses other data of the same shape: for host arrays a BLAKE2b hash of their dtypes, shapes
    and bytes; for dask arrays their dask token (:func:`dask.base.tokenize`, their names:
    nothing is computed, and arrays made alike from the same sources get the same one).

    >>> X, y = np.arange(6.0).reshape(3, 2), np.arange(3)
    >>> data_fingerprint(X, y) == data_fingerprint(X.copy(), y)
    True
    >>> data_fingerprint(X, y) == data_fingerprint(X[::-1], y)
    False
    """
    if is_dask_collection(X) or is_dask_collection(y):
        return f"dask:{tokenize(X, y)}"
    digest = hashlib.blake2b(digest_size=16)
    for a in (np.asarray(X), np.asarray(y)):
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).data)
    return f"blake2b:{digest.hexdigest()}"


def _architecture(config: dict[str, Any]) -> dict[str, Any]:
    """A model config without its initialisation seed (a checkpoint supplies the params)."""
    return {k: v for k, v in config.items() if k != "seed"}


def _describe(model: Sequential) -> str:
    layers = ", ".join(repr(layer) for layer in model.layers)
    return f"[{layers}] on input {model.input_shape} in {model.dtype}"
