from __future__ import annotations

import numpy as np
import pytest

from pnngraph.nn.backend import get_backend

BACKENDS = ["numpy", "emulated"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each model test runs on numpy and on the emulated device (array-api-strict)."""
    return get_backend(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Cluster calibrations of the test clusters go to a temporary cache, not the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()
