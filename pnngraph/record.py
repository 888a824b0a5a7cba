"""What a run did, as plain data: task records (planned and measured) and the run record.

A :class:`TaskRecord` is one bar of a Gantt chart: a key, its phase, a worker and start/stop
seconds from the start of the run. Records come from a plan's predicted slots
(:func:`records_from_slots`) or from what a cluster ran (:func:`records_from_task_stream`, on the
records of ``distributed.get_task_stream``). The phase and step of a key are read by
:mod:`pnngraph.compile.keys`, which owns the key format; phases without a colour of their own are
"other", and a record of an input arriving at a worker is a "transfer".

A :class:`RunRecord` is everything ``pnngraph train`` keeps of a run in ``run.json`` (metadata,
losses, accuracy per epoch, planned and measured records, bytes moved per worker); the report
(:func:`pnngraph.report.render_run`) draws one.

>>> key = ("forward-dense-1a2b3c4d", 3, 0, 1, 0)  # (name, step, shard, micro-batch, stage)
>>> phase_of(key), step_of(key)
('forward', 3)
>>> phase_of("aggregate-conv-dense"), step_of("aggregate-conv-dense"), phase_of(("x-1", 2))
('aggregate', None, 'other')
>>> record = RunRecord(meta={"model": "mlp"}, losses=[0.5, 0.25])
>>> RunRecord.from_json(record.to_json()) == record
True
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pnngraph.compile import keys
from pnngraph.exceptions import ConfigError

PHASE_COLORS: dict[str, str] = {
    "forward": "#1f77b4",
    "backward": "#ff7f0e",
    "grad": "#9467bd",
    "segment": "#c5b0d5",
    "stats": "#ffbb78",
    "aggregate": "#2ca02c",
    "update": "#d62728",
    "params": "#aec7e8",
    "norm": "#98df8a",
    "steps": "#8c564b",
    "local": "#17becf",
    "average": "#bcbd22",
    "transfer": "#7f7f7f",
    "tohost": "#e377c2",
    "other": "#c7c7c7",
}
"""Bar colour of each phase; the keys are every phase a record may have, in legend order."""

PHASES = tuple(PHASE_COLORS)


@dataclass(frozen=True)
class TaskRecord:
    """One task (or one transfer) on one worker, in seconds from the start of the run.

    Parameters
    ----------
    key : str
        ``str()`` of the Dask key.
    phase : str
        One of `PHASES`.
    worker : str
        Worker address or name (a processor of a schedule).
    start, stop : float
        Seconds from the start of the run; ``start <= stop``.
    step : int or None
        Training step of the task, ``None`` when it belongs to none.
    """

    key: str
    phase: str
    worker: str
    start: float
    stop: float
    step: int | None = None

    def __post_init__(self) -> None:
        for name in ("key", "worker"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"TaskRecord.{name}: expected a str, got {getattr(self, name)!r}")
        if self.phase not in PHASE_COLORS:
            raise ConfigError("TaskRecord.phase", "one of " + ", ".join(PHASES), self.phase)
        _seconds("TaskRecord.start", self.start)
        _seconds("TaskRecord.stop", self.stop)
        if self.stop < self.start:
            raise ConfigError(f"TaskRecord({self.key!r}).stop", f"at least start={self.start}",
                              self.stop)
        if self.step is not None and not _is_int(self.step):
            raise ConfigError("TaskRecord.step", "an int or None", self.step)

    @property
    def seconds(self) -> float:
        """Duration, ``stop - start``."""
        return self.stop - self.start


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _seconds(name: str, x: Any) -> float:
    if not isinstance(x, numbers.Real) or isinstance(x, bool) or not math.isfinite(x):
        raise ConfigError(name, "a finite number of seconds", x)
    return float(x)


def phase_of(key: Any) -> str:
    """The phase of a key (:func:`pnngraph.compile.keys.phase_of`) when it has a colour, else
    ``"other"``.

    >>> phase_of(("update-dense-1a2b3c4d", 4, 0)), phase_of("finalize-0a1b"), phase_of(None)
    ('update', 'other', 'other')
    """
    phase = keys.phase_of(key)
    return phase if phase in PHASE_COLORS else "other"


step_of = keys.step_of


def _record(key: Any, phase: str, worker: Any, start: float, stop: float) -> TaskRecord:
    return TaskRecord(str(key), phase, str(worker), start, stop, step_of(key))


def records_from_task_stream(
    stream: Sequence[Mapping[str, Any]], origin: float | None = None
) -> list[TaskRecord]:
    """Records of what a cluster ran, from ``distributed.get_task_stream`` records.

    Each compute interval of a record becomes a record of the key's phase, each transfer interval
    (the key's input arriving at the record's worker) a ``"transfer"`` record of that key; other
    actions (``disk-read``, ``deserialize``, ...) are left out. Times count from ``origin`` (epoch
    seconds; the run's start, so that the time before the first task shows), by default from
    the earliest start.

    Parameters
    ----------
    stream : sequence of mappings
        Records with ``"key"``, ``"worker"`` and ``"startstops"``, a list of mappings with
        ``"action"``, ``"start"`` and ``"stop"`` in epoch seconds.

    Returns
    -------
    list of TaskRecord
        Sorted by start, worker and key.
    """
    rows: list[tuple[Any, str, Any, float, float]] = []
    for i, rec in enumerate(_sequence("stream", stream)):
        if not isinstance(rec, Mapping) or not {"key", "worker", "startstops"} <= rec.keys():
            raise ConfigError(f"stream[{i}]", "a mapping with key, worker and startstops", rec)
        for j, ss in enumerate(_sequence(f"stream[{i}]['startstops']", rec["startstops"])):
            name = f"stream[{i}]['startstops'][{j}]"
            if not isinstance(ss, Mapping) or not {"action", "start", "stop"} <= ss.keys():
                raise ConfigError(name, "a mapping with action, start and stop", ss)
            if ss["action"] in ("compute", "transfer"):
                phase = phase_of(rec["key"]) if ss["action"] == "compute" else "transfer"
                rows.append((rec["key"], phase, rec["worker"],
                             _seconds(name + "['start']", ss["start"]),
                             _seconds(name + "['stop']", ss["stop"])))
    t0 = min((row[3] for row in rows), default=0.0) if origin is None else origin
    records = [_record(key, phase, w, a - t0, b - t0) for key, phase, w, a, b in rows]
    return sorted(records, key=lambda r: (r.start, r.worker, r.key))


def records_from_slots(slots: Mapping[Any, tuple[Any, float, float]]) -> list[TaskRecord]:
    """Records of a planned schedule from its ``slots``, key -> ``(processor, start, finish)``.

    >>> [record] = records_from_slots({("grad-dense-1a2b3c4d", 0, 1, 0): ("cpu-1", 0.0, 0.5)})
    >>> record.key, record.phase, record.worker, record.step, record.seconds
    ("('grad-dense-1a2b3c4d', 0, 1, 0)", 'grad', 'cpu-1', 0, 0.5)
    """
    if not isinstance(slots, Mapping):
        raise TypeError(f"slots: expected a mapping key -> (processor, start, finish), "
                        f"got {slots!r}")
    records = []
    for key, slot in slots.items():
        if not isinstance(slot, tuple) or len(slot) != 3:
            raise ConfigError(f"slots[{key!r}]", "a tuple (processor, start, finish)", slot)
        proc, start, stop = slot
        name = f"slots[{key!r}]"
        start, stop = _seconds(name + " start", start), _seconds(name + " finish", stop)
        records.append(_record(key, phase_of(key), proc, start, stop))
    return sorted(records, key=lambda r: (r.start, r.worker, r.key))


def _sequence(name: str, x: Any) -> Sequence[Any]:
    if isinstance(x, str | bytes | Mapping) or not isinstance(x, Sequence):
        raise TypeError(f"{name}: expected a sequence, got {type(x).__name__} {x!r:.80}")
    return x


def _records(name: str, x: Sequence[TaskRecord] | None) -> list[TaskRecord]:
    if x is None:
        return []
    for i, r in enumerate(_sequence(name, x)):
        if not isinstance(r, TaskRecord):
            raise TypeError(f"{name}[{i}]: expected a TaskRecord, got {r!r}")
    return list(x)


def step_makespans(records: Sequence[TaskRecord]) -> dict[int, float]:
    """Per step, the span of its records: latest stop minus earliest start, in seconds.

    >>> recs = [TaskRecord("a", "grad", "w", 0.0, 1.0, step=0),
    ...         TaskRecord("b", "update", "v", 1.5, 2.0, step=0),
    ...         TaskRecord("c", "other", "w", 9.0, 10.0)]
    >>> step_makespans(recs)
    {0: 2.0}
    """
    return keys.step_spans((r.step, r.start, r.stop) for r in _records("records", records))


def busy_fractions(records: Sequence[TaskRecord]) -> dict[str, float]:
    """Per worker, the fraction of the run's wall span (all records) it spent computing.

    Transfers do not count; overlapping tasks on one worker (several threads) count once, so a
    fraction is at most 1.

    >>> busy_fractions([TaskRecord("a", "grad", "w", 0, 2), TaskRecord("b", "grad", "w", 1, 3),
    ...                 TaskRecord("c", "transfer", "v", 3, 4)])
    {'v': 0.0, 'w': 0.75}
    """
    records = _records("records", records)
    if not records:
        return {}
    span = max(r.stop for r in records) - min(r.start for r in records)
    busy = dict.fromkeys(sorted({r.worker for r in records}), 0.0)
    for worker in busy:
        end = -math.inf
        mine = [r for r in records if r.worker == worker and r.phase != "transfer"]
        for r in sorted(mine, key=lambda r: (r.start, r.stop)):
            busy[worker] += max(0.0, r.stop - max(r.start, end))
            end = max(end, r.stop)
    return {w: (b / span if span > 0 else 0.0) for w, b in busy.items()}


@dataclass
class RunRecord:
    """What a run keeps of itself (``run.json``): metadata, the loss of every step, accuracy
    per epoch, the planned and measured task records (both in seconds from the start of the
    run), bytes received per worker, and each chunk's predicted and measured wall time."""

    meta: dict[str, Any] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    accuracy: list[tuple[int, float]] = field(default_factory=list)
    planned: list[TaskRecord] = field(default_factory=list)
    measured: list[TaskRecord] = field(default_factory=list)
    bytes_moved: dict[str, int] = field(default_factory=dict)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    """Per chunk (graph) of the run: the step it reached, its predicted and measured wall time
    in seconds. The planned records lie end to end as predicted, never moved to where the
    measured chunk started, so the planned timeline's end is the whole run's prediction."""
    options: dict[str, Any] = field(default_factory=dict)
    """The command-line options that define the run (``pnngraph train --resume`` reads them)."""

    def __post_init__(self) -> None:
        # numpy arrays (``TrainingResult.losses``) become the lists the fields are declared as,
        # so a record compares, tests for emptiness and saves the same either way
        if hasattr(self.losses, "tolist"):
            self.losses = list(self.losses.tolist())
        if hasattr(self.accuracy, "tolist"):
            self.accuracy = [(int(e), float(a)) for e, a in self.accuracy.tolist()]

    def to_json(self) -> str:
        raw = asdict(self)
        raw["losses"] = [float(v) for v in self.losses]
        raw["accuracy"] = [[int(e), float(a)] for e, a in self.accuracy]
        return json.dumps(raw, default=str)

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        """The record :meth:`to_json` wrote; :class:`ConfigError` for anything else."""
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise TypeError(f"a {type(raw).__name__}, not an object")
            return cls(
                meta=dict(raw.get("meta", {})),
                losses=[float(v) for v in raw.get("losses", [])],
                accuracy=[(int(e), float(a)) for e, a in raw.get("accuracy", [])],
                planned=[TaskRecord(**r) for r in raw.get("planned", [])],
                measured=[TaskRecord(**r) for r in raw.get("measured", [])],
                bytes_moved={str(w): int(n) for w, n in raw.get("bytes_moved", {}).items()},
                chunks=[dict(c) for c in raw.get("chunks", [])],
                options=dict(raw.get("options", {})),
            )
        except (ValueError, TypeError, AttributeError, RecursionError) as err:
            raise ConfigError("run.json", "a file written by pnngraph train", str(err)) from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the record atomically: a reader sees the old file or the new one."""
        out = Path(path)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(out)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunRecord:
        where = Path(path)
        if not where.is_file():
            raise ConfigError("RUN_DIR", "a run directory holding run.json", str(where.parent))
        return cls.from_json(where.read_text())
