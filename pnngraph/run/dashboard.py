"""The pnngraph page of the Dask dashboard: a run's plan beside what it measured, live.

Three pieces, one on each side of the wire::

    client: fit's chunk loop          scheduler                               browser
    Feed.chunk(graph, lo, hi, carry)  Board (a SchedulerPlugin)               /pnngraph
      plan bars, progress marks,  -->   LiveRun per run: plan bars, chunks,   <-- a Bokeh document,
      predicted seconds, losses         losses; its own transition hook         refreshed every
      (batched, <= once a second)       records start/stop/worker of every      second from the
                                        pnngraph task that finishes             Board

:func:`attach` registers the :class:`Board` on whatever scheduler the client talks to (an
embedded cluster or any ``dask scheduler``, no configuration): its ``start`` adds a Bokeh
application at ``/pnngraph`` to the scheduler's running HTTP server, built like Dask's own pages
(:func:`distributed.dashboard.core.BokehApplication`, Dask's page template and theme), and the
page's name to Dask's navigation bar (the ``pages`` of the scheduler's template variables). It
does so only where the scheduler shows Dask's dashboard; ``attach`` returns the page's address,
or ``None`` where there is no page. The scheduler needs pnngraph importable, as workers do.

:func:`feed` gives ``fit`` its :class:`Feed`; ``Feed.chunk`` is called once per chunk, right
after the chunk is submitted. Every message waits in a buffer that is sent at most once a second
(and after the last chunk); ``Feed.losses`` gets the losses ``fit`` brings back with a chunk
(one tiny task that reads them from the chunk's final state on its worker), at most once a
second. ``Feed`` lives in ``fit``'s thread alone. Nothing here ever fails a run: a failure is
logged at debug level and the run carries on.

The page shows the run's title (strategy and model), the current step, the predicted time left
(the plan's predicted seconds per step times the steps left), the planned Gantt chart (each
chunk placed after the predicted time of the ones before), the measured one (from the first
task's start), compute seconds per worker and the loss curve.

>>> board = Board()
>>> board.receive("r1", [("begin", {"title": "data parallel, 2 shards", "total": 4, "first": 0})])
>>> board.record(("grad-dense-1a2b3c4d", 0, 1, 0), "tcp://127.0.0.1:1",
...              [{"action": "compute", "start": 10.0, "stop": 10.5}])
>>> board.receive("r1", [("chunk", {"token": "1a2b3c4d", "lo": 0, "hi": 2, "predicted": 1.0,
...                                 "algorithm": "heft", "bars": [], "marks": []}),
...                      ("losses", {"offset": 0, "values": [0.7, 0.6]})])
>>> view = board.view()
>>> view["step"], view["left"], view["busy"]
(2, 1.0, {'tcp://127.0.0.1:1': 0.5})
"""

from __future__ import annotations

import html
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from distributed.diagnostics.plugin import SchedulerPlugin

from pnngraph.compile import keys
from pnngraph.record import PHASE_COLORS

logger = logging.getLogger(__name__)

NAME = "pnngraph-dashboard"  # the plugin's name on the scheduler
PAGE = "pnngraph"  # the page's path under the dashboard's prefix, and its name in the nav bar
INTERVAL = 1.0  # seconds: the client sends at most this often, the page refreshes this often
MAX_BARS = 20_000  # measured bars the scheduler keeps (all runs), planned bars per run
SHOWN_BARS = 5_000  # bars each Gantt chart of the page draws: the latest
MAX_RUNS = 4  # runs the scheduler keeps; the page shows the one that began last
MAX_TOKENS = 10_000  # builds whose finished tasks the scheduler keeps count of, the latest
MARKED = ("update", "steps", "local")  # the phases of the keys that mark progress


def token_of(key: Any) -> str | None:
    """The build token of a key of a training graph (its name's last word), else ``None``.

    >>> token_of(("tohost-grad-dense-1a2b3c4d", 3, 1)), token_of("x-1"), token_of(("x-y", 1))
    ('1a2b3c4d', None, None)
    """
    if not isinstance(key, tuple) or not key or not isinstance(key[0], str):
        return None
    word = key[0].rsplit("-", 1)[-1]
    if len(word) != 8 or keys.phase_of(key) == "other":
        return None
    try:
        int(word, 16)
    except ValueError:
        return None
    return word


class LiveRun:
    """What the scheduler knows of one run from its client: title, chunks, plan bars, losses."""

    def __init__(self, title: str, total: int, first: int) -> None:
        self.title, self.total, self.first = title, total, first
        self.began = time.time()
        self.algorithm = ""
        self.chunks: dict[str, tuple[int, int, float | None]] = {}  # token -> lo, hi, predicted
        self.planned: deque[tuple[str, str, float, float, int | None]] = deque(maxlen=MAX_BARS)
        self.predicted = 0.0  # predicted seconds of the chunks so far: where the next one starts
        self.losses: dict[int, float] = {}

    def add_chunk(self, msg: Mapping[str, Any]) -> None:
        shift = self.predicted
        for phase, worker, start, stop, step in msg["bars"]:
            self.planned.append((phase, worker, start + shift, stop + shift, step))
        predicted = msg["predicted"]
        self.predicted += predicted if predicted is not None else 0.0
        self.chunks[msg["token"]] = (msg["lo"], msg["hi"], predicted)
        self.algorithm = msg["algorithm"] or self.algorithm

    def add_losses(self, offset: int, values: Sequence[float]) -> None:
        self.losses.update((offset + i, float(v)) for i, v in enumerate(values))


class Board(SchedulerPlugin):
    """The scheduler's side: the runs' published state, and a record of every pnngraph task that
    finished (from the scheduler's own transitions), read by the page."""

    name = NAME
    idempotent = True  # registered again by every run: the first one stays, with its state

    def __init__(self) -> None:
        self.path: str | None = None
        self.runs: dict[str, LiveRun] = {}
        self.current: str | None = None
        self.bars: deque[tuple[str, str, str, float, float, int | None]] = deque(maxlen=MAX_BARS)
        self.first_start: dict[str, float] = {}  # token -> earliest measured start
        self.last_stop: dict[str, float] = {}  # token -> latest measured stop
        self.busy: dict[str, dict[str, float]] = {}  # token -> worker -> compute seconds
        self.marks: dict[str, dict[Any, int]] = {}  # token -> progress key -> steps it completes
        self.early: dict[str, set[Any]] = {}  # token -> progress keys done before its marks came
        self.done: dict[str, int] = {}  # token -> steps completed
        self.version = 0

    async def start(self, scheduler: Any) -> None:
        self.path = serve(scheduler, self)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start == "processing" and finish == "memory":
            self.record(key, kwargs.get("worker"), kwargs.get("startstops", ()))

    def record(self, key: Any, worker: Any, startstops: Iterable[Mapping[str, Any]]) -> None:
        """Keep the compute and transfer intervals of a finished task of a training graph."""
        token = token_of(key)
        if token is None:
            return
        if token not in self.busy:
            while len(self.busy) >= MAX_TOKENS:
                self._drop(next(iter(self.busy)))
            self.busy[token] = {}
        phase = _phase(key)
        step, worker = keys.step_of(key), str(worker)
        for ss in startstops:
            action, a, b = ss.get("action"), float(ss["start"]), float(ss["stop"])
            if action == "compute":
                self.bars.append((token, phase, worker, a, b, step))
                per = self.busy[token]
                per[worker] = per.get(worker, 0.0) + (b - a)
                self.first_start[token] = min(self.first_start.get(token, a), a)
                self.last_stop[token] = max(self.last_stop.get(token, b), b)
            elif action == "transfer":
                self.bars.append((token, "transfer", worker, a, b, step))
        if phase in MARKED:
            marks = self.marks.get(token)
            if marks is None:
                self.early.setdefault(token, set()).add(key)
            else:
                self.done[token] = self.done.get(token, 0) + marks.pop(key, 0)
        self.version += 1

    def receive(self, run_id: str, messages: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Apply a client's messages: ``begin`` a run, add a ``chunk``, add ``losses``."""
        for kind, msg in messages:
            if kind == "begin":
                self.runs[run_id] = LiveRun(msg["title"], msg["total"], msg["first"])
                self.current = run_id
                while len(self.runs) > MAX_RUNS:
                    self._forget(next(iter(self.runs)))
                continue
            run = self.runs.get(run_id)
            if run is None:
                continue
            if kind == "chunk":
                run.add_chunk(msg)
                token = msg["token"]
                marks = {_key(k): n for k, n in msg["marks"]}
                done = sum(marks.pop(k, 0) for k in self.early.pop(token, ()))
                self.done[token] = self.done.get(token, 0) + done
                self.marks[token] = marks
            elif kind == "losses":
                run.add_losses(msg["offset"], msg["values"])
        self.version += 1

    def _forget(self, run_id: str) -> None:
        for token in self.runs.pop(run_id).chunks:
            self._drop(token)

    def _drop(self, token: str) -> None:
        for table in (self.first_start, self.last_stop, self.busy, self.marks, self.early,
                      self.done):
            table.pop(token, None)

    def view(self, run_id: str | None = None) -> dict[str, Any]:
        """What the page draws of a run (by default the one that began last), as plain data."""
        run = self.runs.get(run_id or self.current or "")
        if run is None:
            return {"title": None}
        tokens = set(run.chunks)
        starts = [self.first_start[t] for t in tokens if t in self.first_start]
        origin = min(starts) if starts else run.began
        measured = [(phase, w, a - origin, b - origin, step)
                    for t, phase, w, a, b, step in self.bars if t in tokens]
        busy: dict[str, float] = {}
        for t in tokens:
            for w, s in self.busy.get(t, {}).items():
                busy[w] = busy.get(w, 0.0) + s
        marked = sum(self.done.get(t, 0) for t in tokens)
        reported = max(run.losses) + 1 - run.first if run.losses else 0
        step = min(run.total, run.first + max(marked, reported))
        end = time.time() if step < run.total else max(
            (self.last_stop[t] for t in tokens if t in self.last_stop), default=origin)
        planned = [c for c in run.chunks.values() if c[2] is not None]
        per_step = (sum(c[2] for c in planned) / sum(c[1] - c[0] for c in planned)  # type: ignore[misc]
                    if planned else None)
        return {
            "title": run.title, "algorithm": run.algorithm, "step": step, "total": run.total,
            "chunks": len(run.chunks), "elapsed": max(0.0, end - origin),
            "left": None if per_step is None else per_step * (run.total - step),
            "planned": list(run.planned)[-SHOWN_BARS:], "measured": measured[-SHOWN_BARS:],
            "busy": dict(sorted(busy.items())), "losses": sorted(run.losses.items()),
            "version": (self.version, id(run)),
        }


def _key(key: Any) -> Any:
    """A key as the scheduler holds it (a list that came through a message is a tuple again)."""
    return tuple(_key(k) for k in key) if isinstance(key, list) else key


def _receive(dask_scheduler: Any, run_id: str, messages: list[Any]) -> bool:
    board = dask_scheduler.plugins.get(NAME)
    if board is None:
        return False
    board.receive(run_id, messages)
    return True


def _view(dask_scheduler: Any) -> dict[str, Any]:
    board = dask_scheduler.plugins.get(NAME)
    return {"title": None} if board is None else board.view()


def _page_path(dask_scheduler: Any) -> str | None:
    board = dask_scheduler.plugins.get(NAME)
    return None if board is None else board.path


# --- serving the page, on the scheduler -------------------------------------------------------


def serve(scheduler: Any, board: Board) -> str | None:
    """Add the page to ``scheduler``'s HTTP server and its name to Dask's navigation bar; the
    page's path, or ``None`` where the scheduler shows no Dask dashboard (or has no Bokeh)."""
    try:
        from bokeh.server.server import BokehTornado
        from distributed.dashboard.core import BokehApplication
        from distributed.dashboard.scheduler import template_variables
        from tornado.ioloop import IOLoop
    except ImportError:
        return None
    http = getattr(scheduler, "http_application", None)
    dask_pages = [a for a in getattr(http, "applications", ()) if isinstance(a, BokehTornado)]
    if http is None or not dask_pages:
        return None
    prefix = dask_pages[0].prefix.rstrip("/")
    variables = template_variables(scheduler)  # one dict per scheduler: Dask's pages share it
    if PAGE not in variables["pages"]:
        variables["pages"].append(PAGE)

    def make(server: Any, extra: dict[str, Any], doc: Any) -> None:
        page_document(board, extra, doc)

    app = BokehApplication({f"/{PAGE}": make}, scheduler, prefix=prefix,
                           template_variables=variables)
    http.add_application(app)
    app.initialize(IOLoop.current())
    app.start()
    return f"{prefix}/{PAGE}"


def page_document(board: Board, extra: dict[str, Any], doc: Any) -> None:
    """Fill a Bokeh document with the page, in Dask's template and theme, refreshed every
    second."""
    from distributed.dashboard.components import add_periodic_callback
    from distributed.dashboard.components.scheduler import BOKEH_THEME, env

    page = Page(board)
    doc.title = "Dask: pnngraph"
    doc.add_root(page.root)
    doc.template = env.get_template("simple.html")
    doc.template_variables.update(extra)
    doc.theme = BOKEH_THEME
    add_periodic_callback(doc, page, int(INTERVAL * 1000))


class Page:
    """The page's Bokeh models: a heading, the planned and measured Gantt charts (one time axis,
    one worker axis), compute seconds per worker and the loss curve."""

    def __init__(self, board: Board) -> None:
        from bokeh.layouts import column, row
        from bokeh.models import ColumnDataSource, DataRange1d, FactorRange, HoverTool
        from bokeh.models.widgets import Div
        from bokeh.plotting import figure

        self.board = board
        self.shown: Any = None
        self.header = Div(text=_heading(board.view()), sizing_mode="stretch_width")
        self.workers = FactorRange(factors=[])
        bar = ("phase", "worker", "start", "stop", "step", "color", "alpha")
        self.sources = {name: ColumnDataSource({k: [] for k in bar}, name=f"pnngraph-{name}")
                        for name in ("planned", "measured")}
        self.busy = ColumnDataSource({"worker": [], "seconds": []}, name="pnngraph-busy")
        self.loss = ColumnDataSource({"step": [], "loss": []}, name="pnngraph-loss")
        time_axis = DataRange1d(start=0)
        charts = []
        for name, source in self.sources.items():
            p = figure(title=f"{name} (seconds from the run's first task)", height=260,
                       y_range=self.workers, x_range=time_axis, sizing_mode="stretch_width",
                       tools="xpan,xwheel_zoom,box_zoom,reset", name=f"pnngraph-{name}")
            p.hbar(y="worker", left="start", right="stop", height=0.8, color="color",
                   alpha="alpha", legend_field="phase", source=source)
            p.add_tools(HoverTool(tooltips=[("phase", "@phase"), ("step", "@step"),
                                            ("worker", "@worker"), ("start", "@start{0.000} s"),
                                            ("stop", "@stop{0.000} s")]))
            p.add_layout(p.legend[0], "right")
            charts.append(p)
        busy = figure(title="compute seconds per worker", height=260, y_range=self.workers,
                      sizing_mode="stretch_width", tools="", name="pnngraph-busy")
        busy.hbar(y="worker", right="seconds", height=0.7, color="#1f77b4", source=self.busy)
        curve = figure(title="loss per step", height=260, sizing_mode="stretch_width",
                       tools="xpan,xwheel_zoom,reset", name="pnngraph-loss")
        curve.line("step", "loss", source=self.loss, color="#d62728")
        curve.xaxis.axis_label, curve.yaxis.axis_label = "step", "loss"
        self.root = column(self.header, *charts, row(busy, curve, sizing_mode="stretch_width"),
                           sizing_mode="stretch_width")
        self.update()

    def update(self) -> None:
        view = self.board.view()
        if view.get("version") == self.shown and view["title"] is not None:
            return
        self.header.text = _heading(view)
        if view["title"] is None:
            return
        self.shown = view["version"]
        for name, source in self.sources.items():
            rows = view[name]
            source.data = {
                "phase": [r[0] for r in rows], "worker": [r[1] for r in rows],
                "start": [r[2] for r in rows], "stop": [r[3] for r in rows],
                "step": ["" if r[4] is None else r[4] for r in rows],
                "color": [PHASE_COLORS[r[0]] for r in rows],
                "alpha": [0.5 if r[0] == "transfer" else 0.9 for r in rows],
            }
        workers = sorted({r[1] for name in self.sources for r in view[name]} | set(view["busy"]))
        if list(self.workers.factors) != workers:
            self.workers.factors = workers
        self.busy.data = {"worker": list(view["busy"]), "seconds": list(view["busy"].values())}
        self.loss.data = {"step": [s for s, _ in view["losses"]],
                          "loss": [v for _, v in view["losses"]]}


def _heading(view: Mapping[str, Any]) -> str:
    """The page's heading: the run's title and where it stands."""
    if view.get("title") is None:
        return ("<h2>pnngraph</h2><p>No pnngraph run has reported to this scheduler yet: "
                "<code>pnngraph.fit(..., client=client)</code> and <code>pnngraph train</code> "
                "show their runs here.</p>")
    left = view["left"]
    done = view["step"] >= view["total"]
    status = [f"step <b>{view['step']}</b> of {view['total']}", _count(view["chunks"], "chunk"),
              f"{view['elapsed']:.2f} s since the first task"]
    if done:
        status.append("<b>finished</b>")
    elif left is not None:
        status.append(f"predicted time left <b>{left:.1f} s</b>")
    if view["algorithm"]:
        status.append(f"placed by {html.escape(view['algorithm'])}")
    last = view["losses"][-1][1] if view["losses"] else math.nan
    if math.isfinite(last):
        status.append(f"last loss {last:.4f}")
    return f"<h2>pnngraph: {html.escape(view['title'])}</h2><p>{' &middot; '.join(status)}</p>"


# --- the client's side ------------------------------------------------------------------------


def attach(client: Any) -> str | None:
    """Register the page's plugin on ``client``'s scheduler (once per scheduler); the page's
    address, or ``None`` where the scheduler shows none. Never raises."""
    try:
        client.register_plugin(Board())
        path = client.run_on_scheduler(_page_path)
        if path is None:
            return None
        link = client.dashboard_link
        if link.endswith("/status"):  # Dask's link to its status page, proxied or not
            return link[: -len("status")] + PAGE
        parts = urlsplit(link)
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    except Exception as err:  # no page is no reason to fail a run
        logger.debug("pnngraph dashboard page not available: %s", err)
        return None


def view(client: Any) -> dict[str, Any]:
    """What the page shows now, as plain data (:meth:`Board.view`), from ``client``'s
    scheduler; ``{"title": None}`` before any run reported there."""
    result: dict[str, Any] = client.run_on_scheduler(_view)
    return result


def describe(strategy: Any, model: Any) -> str:
    """A run's title: its strategy and its model in words.

    >>> from pnngraph.compile.strategies import Pipeline
    >>> from pnngraph.nn import Dense, ReLU, Sequential
    >>> describe(Pipeline(2, 4), Sequential([Dense(4, 8), ReLU(), Dense(8, 2)], input_shape=(4,)))
    'pipeline, 2 stages x 4 micro-batches; dense 4->8, relu, dense 8->2 (58 parameters)'
    """
    from pnngraph.compile.strategies import DataParallel, Hybrid, ModelAveraging, Pipeline

    if isinstance(strategy, DataParallel):
        what = f"data parallel, {_count(strategy.shards, 'shard')}"
    elif isinstance(strategy, Hybrid):
        _, k, m = strategy.layout
        what = f"hybrid, {strategy.data.shards} pipelines of {k} stages x {m} micro-batches"
    elif isinstance(strategy, Pipeline):
        _, k, m = strategy.layout
        what = f"pipeline, {k} stages x {_count(m, 'micro-batch')}"
    elif isinstance(strategy, ModelAveraging):
        what = (f"model averaging, {_count(len(strategy.weights), 'replica')}, "
                f"{_count(strategy.local_steps, 'local step')}")
    else:
        what = type(strategy).__name__
    layers = []
    for layer, (a, b) in zip(model.layers, zip(model.shapes, model.shapes[1:], strict=False),
                             strict=True):
        shape = f" {'x'.join(map(str, a))}->{'x'.join(map(str, b))}"
        layers.append(layer.kind + (shape if layer.kind in ("dense", "conv") else ""))
    return f"{what}; {', '.join(layers)} ({model.n_params:,} parameters)"


def _count(n: int, word: str) -> str:
    plural = word + ("es" if word.endswith("ch") else "s")
    return f"{n} {word if n == 1 else plural}"


class Feed:
    """The client's side of the page for one run: buffers what the page needs and sends it to
    the scheduler's :class:`Board`, at most once a second. Without a page it does nothing."""

    def __init__(self, client: Any, title: str, total: int, first: int) -> None:
        self.client, self.total = client, total
        self.path = attach(client) if client is not None else None
        self.run_id = uuid.uuid4().hex
        self.pending: list[tuple[str, dict[str, Any]]] = [
            ("begin", {"title": title, "total": total, "first": first})]
        self.sent = -math.inf  # when the buffer was last sent

    @property
    def live(self) -> bool:
        """Whether there is a page to feed."""
        return self.path is not None

    def chunk(self, graph: Any, lo: int, hi: int) -> None:
        """Tell the page of a chunk just submitted: its plan, its progress marks and its
        prediction. Never raises."""
        if self.path is None:
            return
        try:
            plan = graph.plan
            bars = [] if plan is None else [
                (_phase(k), str(w), float(a), float(b), keys.step_of(k))
                for k, (w, a, b) in plan.predicted.slots.items()]
            marks = [(k, n) for k, n in graph.progress_marks().items()]
            self.pending.append(("chunk", {
                "token": graph.token, "lo": lo, "hi": hi, "bars": bars, "marks": marks,
                "predicted": None if plan is None else float(plan.wall_seconds),
                "algorithm": "" if plan is None else plan.algorithm}))
            if hi >= self.total or time.monotonic() - self.sent >= INTERVAL:
                self.flush()
        except Exception as err:
            logger.debug("pnngraph dashboard: chunk %d-%d not published: %s", lo, hi, err)

    def losses(self, offset: int, values: Sequence[float]) -> None:
        """Tell the page the run's losses from step ``offset`` on (``fit`` brings them back
        with a chunk, at most once a second and with the last chunk). Never raises."""
        if self.path is None:
            return
        self.pending.append(("losses", {"offset": offset, "values": [float(v) for v in values]}))
        if offset + len(values) >= self.total or time.monotonic() - self.sent >= INTERVAL:
            self.flush()

    def close(self) -> None:
        """Send what is still buffered: the run's end reaches the page before its client or
        cluster closes."""
        if self.path is not None:
            self.flush()

    def flush(self) -> None:
        """Send what is buffered to the scheduler now."""
        messages, self.pending = self.pending, []
        self.sent = time.monotonic()
        if not messages:
            return
        try:
            self.client.run_on_scheduler(_receive, run_id=self.run_id, messages=messages)
        except Exception as err:
            logger.debug("pnngraph dashboard: %d messages not sent: %s", len(messages), err)


def _phase(key: Any) -> str:
    phase = keys.phase_of(key)
    return phase if phase in PHASE_COLORS else "other"


def feed(client: Any, model: Any, spec: Any, first: int) -> Feed:
    """The page's :class:`Feed` for a run of ``model`` with ``spec`` from step ``first``."""
    try:
        title = describe(spec.strategy, model)
    except Exception as err:  # a title is no reason to fail a run
        logger.debug("pnngraph dashboard: no title: %s", err)
        title = type(spec.strategy).__name__
    return Feed(client, title, spec.steps, first)
