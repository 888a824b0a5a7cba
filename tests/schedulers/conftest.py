"""Fixtures of the schedulers tests (the cases themselves live in ``sched_cases``)."""

from __future__ import annotations

import networkx as nx
import pytest
from hypothesis import strategies as st

from schedulers.examples import topcuoglu2002

from sched_cases import SHAPES, dags  # isort: skip


@pytest.fixture(params=sorted(SHAPES))
def shape(request: pytest.FixtureRequest) -> nx.DiGraph:
    """Each hand-made shape: single, independent, chain, fork, join, diamond."""
    return SHAPES[request.param].copy()


@pytest.fixture
def topcuoglu() -> tuple[nx.DiGraph, list[str]]:
    """The 10-node, 3-processor example of Topcuoglu, Hariri & Wu (2002)."""
    return topcuoglu2002()


@pytest.fixture(scope="session")
def dag_strategy() -> st.SearchStrategy:
    """The `dags` strategy, for tests that draw with ``st.data()``."""
    return dags()
