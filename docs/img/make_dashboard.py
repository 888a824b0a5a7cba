"""Take docs/img/dashboard.png, the pnngraph page of a finished run in headless Chromium:
``python docs/img/make_dashboard.py`` (from the checkout's root)."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from distributed import Client, LocalCluster  # noqa: E402

import pnngraph  # noqa: E402
from pnngraph import data  # noqa: E402
from pnngraph.nn.presets import mlp  # noqa: E402
from pnngraph.run import dashboard  # noqa: E402
from tests.test_dashboard import _browse, finished, wait_for  # noqa: E402
from tests.test_report import find_chromium  # noqa: E402


def main() -> None:
    browser = find_chromium()
    if browser is None:
        sys.exit("no Chromium found (apt-get install -y chromium)")
    train, _ = data.digits().split(0.2, seed=0)
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        steps = 3 * train.X.shape[0] // 64
        pnngraph.fit(mlp((64,), 10, hidden=(64, 32)), train, strategy=pnngraph.Pipeline(2, 4),
                     client=client, steps=steps, chunk_steps=steps // 3, batch_size=64, lr=0.1,
                     scheduler="heft", progress=False)
        wait_for(lambda: finished(client, steps), "the page to see every step")
        url = dashboard.attach(client)
        assert url is not None
        with tempfile.TemporaryDirectory() as profile:
            _, png = asyncio.run(_browse(browser, url, Path(profile)))
    (HERE / "dashboard.png").write_bytes(png)


if __name__ == "__main__":
    main()
