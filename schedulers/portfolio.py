"""`best`: run a portfolio of schedulers and keep the shortest valid schedule.

Policy: every scheduler of the portfolio schedules the graph; each schedule is checked with
`Schedule.validate`; the shortest makespan wins, ties to the scheduler listed first, so the result
is deterministic. The default portfolio holds `fastest_single`, so `best` never fails (its speedup
is at least 1), and HEFT, so it is never longer than HEFT. Its ``algorithm`` names the winner.

>>> from schedulers.examples import topcuoglu2002
>>> schedule = best(*topcuoglu2002())
>>> schedule.makespan, schedule.algorithm
(76.0, 'heft_lookahead')
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import networkx as nx

from schedulers.baselines import fastest_single, greedy_start
from schedulers.cpop import cpop
from schedulers.exceptions import InvalidScheduleError
from schedulers.heft import heft
from schedulers.lookahead import heft_lookahead
from schedulers.peft import peft
from schedulers.schedule import Schedule

__all__ = ["PORTFOLIO", "best"]

Scheduler = Callable[[nx.DiGraph, Sequence[Hashable]], Schedule]

PORTFOLIO: tuple[Scheduler, ...] = (heft, heft_lookahead, peft, cpop, greedy_start, fastest_single)
"""The default portfolio of `best`, in tie-breaking order."""


def best(
    graph: nx.DiGraph,
    processors: Sequence[Hashable],
    *,
    portfolio: Sequence[Scheduler] = PORTFOLIO,
) -> Schedule:
    """The shortest valid schedule among those of ``portfolio``.

    Parameters
    ----------
    graph : networkx.DiGraph
        A DAG with node ``costs`` and edge ``comm`` (see `schedulers.heft`).
    processors : sequence of hashable
        The processors, distinct.
    portfolio : sequence of schedulers
        Functions ``(graph, processors) -> Schedule``; ties go to the one listed first.

    Returns
    -------
    Schedule
        The winner's schedule; its ``algorithm`` names the winner.
    """
    if not portfolio:
        raise ValueError("expected at least one scheduler in the portfolio, got none")
    winner: Schedule | None = None
    for scheduler in portfolio:
        schedule = scheduler(graph, processors)
        try:
            schedule.validate(graph)
        except InvalidScheduleError:
            continue
        if winner is None or schedule.makespan < winner.makespan:
            winner = schedule
    if winner is None:
        raise InvalidScheduleError(["no scheduler of the portfolio made a valid schedule"])
    return winner
