"""A pnngraph page on the Dask dashboard: the plan of the graph being run.

Dask's scheduler serves extra pages from the modules listed in the config value
``distributed.scheduler.http.routes``; this module is one (``routes`` below), so the page lives
at ``http://SCHEDULER:8787/pnngraph`` once the scheduler starts with it listed::

    distributed:
      scheduler:
        http:
          routes: [..., pnngraph.run.dashboard]      # the embedded cluster adds it itself

``publish_plan(client, graph)`` sends the plan (a summary table and a Gantt chart as SVG) to
the scheduler, where a small scheduler plugin keeps it for the page. Both are public Dask APIs
(``Client.run_on_scheduler``, ``SchedulerPlugin``, the routes config).
"""

from __future__ import annotations

import html
import time
from typing import Any

import dask
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.http.utils import RequestHandler

import schedulers

ROUTES_CONFIG = "distributed.scheduler.http.routes"
MODULE = "pnngraph.run.dashboard"
EMPTY = "<p>No pnngraph plan has been published to this scheduler yet.</p>"


class PlanBoard(SchedulerPlugin):
    """Holds the latest published plan page on the scheduler."""

    name = "pnngraph"

    def __init__(self) -> None:
        self.body = EMPTY
        self.published = 0.0


def _store(dask_scheduler: Any, body: str) -> None:
    board = dask_scheduler.plugins.get(PlanBoard.name)
    if board is None:
        board = PlanBoard()
        dask_scheduler.add_plugin(board)
    board.body = body
    board.published = time.time()


def plan_page(graph: Any) -> str:
    """HTML body describing ``graph``'s plan: totals, tasks per worker and phase, a Gantt chart."""
    plan = graph.plan
    head = f"<h2>pnngraph: {html.escape(repr(graph))}</h2>"
    if plan is None:
        return head + "<p>This graph has no plan: Dask places its tasks.</p>"
    per: dict[tuple[str, str], int] = {}
    for key, worker in plan.placement.items():
        phase = key[0].split("-")[0] if isinstance(key, tuple) else str(key)
        per[(worker, phase)] = per.get((worker, phase), 0) + 1
    phases = sorted({p for _, p in per})
    workers = sorted({w for w, _ in per})
    rows = "".join(
        f"<tr><td>{html.escape(w)}</td>"
        + "".join(f"<td>{per.get((w, p), 0)}</td>" for p in phases)
        + "</tr>"
        for w in workers
    )
    table = (
        "<table border=1 cellpadding=4><tr><th>worker</th>"
        + "".join(f"<th>{html.escape(p)}</th>" for p in phases)
        + f"</tr>{rows}</table>"
    )
    svg = schedulers.gantt_svg(
        plan.predicted,
        title=f"predicted ({plan.algorithm})",
        width=1100,
        label=lambda key: key[0].split("-")[0] if isinstance(key, tuple) else str(key),
    )
    return (
        head
        + f"<p>scheduler <b>{html.escape(plan.algorithm)}</b>, predicted wall time "
        f"<b>{plan.wall_seconds:.4f} s</b> (predicted makespan {plan.makespan:.4f} s), "
        f"{len(plan.placement)} tasks placed</p>"
        + table
        + svg
    )


def publish_plan(client: Any, graph: Any) -> None:
    """Show ``graph``'s plan on the scheduler's ``/pnngraph`` page."""
    client.run_on_scheduler(_store, body=plan_page(graph))


class PlanPage(RequestHandler):
    """GET /pnngraph: the latest published plan."""

    def get(self) -> None:
        board = self.server.plugins.get(PlanBoard.name) if self.server is not None else None
        body = board.body if board is not None else EMPTY
        stamp = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(board.published))
            if board is not None and board.published
            else "never"
        )
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(
            "<!doctype html><html><head><title>pnngraph plan</title></head><body>"
            f"{body}<p><small>published {stamp}</small></p></body></html>"
        )


routes: list[tuple[str, type, dict[str, Any]]] = [("/pnngraph", PlanPage, {})]


def enable() -> None:
    """Add this module to the scheduler's page routes (for schedulers started after the call)."""
    current = list(dask.config.get(ROUTES_CONFIG, []))
    if MODULE not in current:
        dask.config.set({ROUTES_CONFIG: [*current, MODULE]})
