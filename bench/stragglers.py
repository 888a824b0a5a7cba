"""A straggler among three workers: the equal split against an adaptive run, and the best split.

Three worker processes of one thread each (no work stealing); one of them is made a slow device
with :func:`pnngraph.testing.slow_down` (each kernel call computes, then sleeps ``factor - 1``
times as long: its cores go to the others). An MLP trains with ``fit`` in chunks, three ways,
alternating in each round:

    equal       DataParallel(3), shard j on worker j (scheduler "static"): 1/3 of the batch each
    adaptive    DataParallel("auto"), adapt=True: shards sized from the measured cluster model,
                re-sized between chunks where a worker drifts from its prediction
    split s     (offline search) DataParallel with the slow worker's shard of s samples and the
                rest shared by the other two, static (s = 0: DataParallel(2) on the other two,
                the slow worker left out); the grid's best is "best split"

Per-step time: the median over the chunks of a run's second half (each chunk's wall time since
the chunk before ended, per step), then the median over rounds. A second scenario starts with no
straggler and slows a worker once half the steps are done (an ``on_chunk`` hook): the per-step
times of the chunks before and after, for the equal split and the adaptive run, when the
adaptive run re-sized, and its shard sizes per chunk (``--svg`` draws them). A third starts
slowed and recovers half-way through twice the steps (the adaptive run left the straggler out
and measures it again now and then): the same figures, and the adaptive run's per-step time
after the recovery over the equal split's (the best split once all workers are equal).

    python bench/stragglers.py                       # 2 rounds, 40 steps
    python bench/stragglers.py --quick               # a smoke run (tiny sizes, one round)
    python bench/stragglers.py --svg docs/adaptive-shards.svg

The calibration cache of this process goes to a temporary directory (a slowed worker must not
be remembered as the machine's speed); ``--unset-openblas`` as in every benchmark.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import _setup


def more(parser: Any) -> None:
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--factor", type=float, default=3.0)
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--svg", default=None)


def make_model(hidden: int) -> Any:
    from pnngraph.nn import Dense, ReLU, Sequential

    return Sequential([Dense(32, hidden), ReLU(), Dense(hidden, hidden), ReLU(),
                       Dense(hidden, 4)], input_shape=(32,), seed=0)


def make_data(n: int) -> tuple[Any, Any]:
    import numpy as np

    X = np.random.default_rng(0).standard_normal((n, 32))
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)


class Changes(logging.Handler):
    """The ``pnngraph`` log lines of a run (its re-sizes)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def note(what: str, t0: float) -> None:
    """A progress line on standard error (the tables go to standard output)."""
    print(f"  {what}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def per_step(result: Any, chunk: int) -> float:
    """Median seconds per step over the chunks of the run's second half (its steady state: an
    adaptive run's re-sizes land two chunks after the chunk that showed the drift)."""
    seconds = list(result.step_seconds)
    per_chunk = [seconds[i] for i in range(0, len(seconds), chunk)]
    return statistics.median(per_chunk[len(per_chunk) // 2:] or per_chunk)


def svg_of(chunks: list[dict[str, Any]], slow: str, title: str) -> str:
    """Stacked bars: samples per worker (one colour each; the slowed one red) per chunk."""
    workers = sorted({w for c in chunks for w in c["sizes"]})
    colours = {w: ("#c0392b" if w == slow else c) for w, c in
               zip(workers, ("#2e86c1", "#28b463", "#7d3c98", "#d4ac0d"), strict=False)}
    total = max(sum(c["sizes"].values()) for c in chunks)
    W, H, left, top = 40 + 22 * len(chunks), 200, 40, 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W + 170}" height="{H + 50}">',
             f'<text x="{left}" y="14" font-size="12">{title}</text>']
    for i, c in enumerate(chunks):
        y = top + H - 20
        for w in workers:
            n = c["sizes"].get(w, 0)
            h = (H - 20) * n / total
            y -= h
            parts.append(f'<rect x="{left + 22 * i}" y="{y:.1f}" width="18" height="{h:.1f}" '
                         f'fill="{colours[w]}"><title>steps {c["steps"][0]}-{c["steps"][1]}: '
                         f'{w} {n}</title></rect>')
        parts.append(f'<text x="{left + 22 * i}" y="{top + H - 6}" font-size="9">'
                     f'{c["steps"][0]}</text>')
    parts.append(f'<text x="{left}" y="{top + H + 10}" font-size="10">first step of each '
                 'chunk; bar: samples of the batch per worker</text>')
    for k, w in enumerate(workers):
        label = w + (" (slowed)" if w == slow else "")
        parts.append(f'<rect x="{W}" y="{top + 16 * k}" width="10" height="10" '
                     f'fill="{colours[w]}"/><text x="{W + 14}" y="{top + 9 + 16 * k}" '
                     f'font-size="10">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def main() -> None:
    args = _setup.arguments(__doc__ or "", steps=40, rounds=2, more=more)
    blas = _setup.settle(args)
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="pnngraph-bench-")
    if args.quick:
        args.rounds, args.steps, args.hidden, args.batch, args.chunk = 1, 12, 64, 120, 2
    elif args.batch == 8192 and args.hidden == 2048:  # the defaults of every benchmark
        args.batch, args.hidden = 600, 1024
    import dask
    import distributed

    from pnngraph import DataParallel, fit
    from pnngraph.run.session import live_workers
    from pnngraph.testing import slow_down

    log = logging.getLogger("pnngraph")
    log.setLevel(logging.INFO)
    changes = Changes()
    log.addHandler(changes)
    X, y = make_data(5 * args.batch)
    B = args.batch
    kw = {"steps": args.steps, "chunk_steps": args.chunk, "batch_size": B, "lr": 0.05,
          "progress": False, "shuffle": False}
    print(f"OPENBLAS variables: {blas}; MLP 32-{args.hidden}-{args.hidden}-4 float64, batch "
          f"{B}, {args.steps} steps in chunks of {args.chunk}, slow-down x{args.factor}")
    with dask.config.set({"distributed.scheduler.work-stealing": False}), \
            distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True,
                                     dashboard_address=None, host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        workers = list(live_workers(client))
        slow = workers[-1]  # static places shard j on worker j: the last shard is the slow one

        def equal(**more: Any) -> Any:
            t0 = time.perf_counter()
            out = fit(make_model(args.hidden), (X, y), strategy=DataParallel(3),
                      scheduler="static", client=client, **{**kw, **more})
            note("equal split", t0)
            return out

        def adaptive(**more: Any) -> Any:
            t0 = time.perf_counter()
            out = fit(make_model(args.hidden), (X, y), strategy=DataParallel("auto"),
                      adapt=True, client=client, **{**kw, **more})
            note("adaptive", t0)
            return out

        def split(s: int) -> Any:
            rest = B - s
            t0 = time.perf_counter()
            weights = [rest - rest // 2, rest // 2] + ([s] if s else [])  # 0: left out
            out = fit(make_model(args.hidden), (X, y), scheduler="static", client=client,
                      strategy=DataParallel(weights), **kw)
            note(f"split {s}", t0)
            return out

        # ---------------------------------------------- scenario 1: slow from the start
        slow_down(client, slow, args.factor)
        equal(), adaptive()  # warm-up: kernels profiled, code paths compiled
        # the slow worker's share of the batch: none (DataParallel on the two others) and
        # from 2 % up (its own update and sums take a fixed time whatever its shard, so the
        # best split may give it little or nothing)
        fractions = (0.02, 0.04, 0.06, 0.08, 0.11, 0.14, 0.18, 0.25)
        grid = [0, *sorted({max(3, round(B * f)) for f in fractions})]
        times: dict[Any, list[float]] = {"equal": [], "adaptive": [], **{g: [] for g in grid}}
        sizes: list[dict[str, Any]] = []
        for _ in range(args.rounds):  # alternating: equal, adaptive, every split of the grid
            times["equal"].append(per_step(equal(), args.chunk))
            del changes.lines[:]
            result = adaptive()
            first_log = list(changes.lines)
            times["adaptive"].append(per_step(result, args.chunk))
            sizes = result.shards
            for g in grid:
                times[g].append(per_step(split(g), args.chunk))
        searched = {g: statistics.median(times[g]) for g in grid}
        best = min(searched, key=searched.__getitem__)
        eq, ad = statistics.median(times["equal"]), statistics.median(times["adaptive"])
        print("\n| run | slow worker's samples | s per step (median) | vs equal split |")
        print("|---|---|---|---|")
        print(f"| equal split, DataParallel(3) | {B // 3} | {eq:.3f} | 1.00 |")
        steady = sizes[len(sizes) // 2:] or sizes
        slow_share = statistics.median(c["sizes"].get(slow, 0) for c in steady)
        print(f"| adaptive, DataParallel('auto') | {slow_share:.0f} (median, 2nd half) | "
              f"{ad:.3f} | "
              f"{eq / ad:.2f} |")
        for s in grid:
            mark = " (best)" if s == best else ""
            print(f"| split {s}{mark} | {s} | {searched[s]:.3f} | {eq / searched[s]:.2f} |")
        print(f"\nequal / adaptive: {eq / ad:.2f}x; adaptive / best split: "
              f"{ad / searched[best]:.2f}")
        print("\nadaptive run's log (last round):")
        for line in first_log:
            print("  " + line)
        print("\nadaptive run, samples per worker per chunk:")
        print(chunk_table(sizes, workers, slow))

        def change_mid_run(title: str, first: float, then: float, steps: int) -> Any:
            """Equal split and adaptive, the slow worker at ``first`` x until half the steps,
            then at ``then``: per-step seconds before and after; the adaptive run."""
            os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="pnngraph-bench-")
            half = steps // 2

            def hook(report: Any) -> None:
                if report.step == half:
                    slow_down(client, slow, then)

            print(f"\n{title} (s per step: median over the chunks before, and over those "
                  "from three chunks after on)")
            print("\n| run | before | after | after / before |")
            print("|---|---|---|---|")
            out: dict[str, Any] = {}
            for name, make in (("equal split", equal), ("adaptive", adaptive)):
                slow_down(client, slow, first)
                del changes.lines[:]
                t0 = time.perf_counter()
                result = make(on_chunk=hook, steps=steps)
                wall = time.perf_counter() - t0
                s = list(result.step_seconds)
                c = args.chunk
                before = statistics.median(s[c:half:c] or s[:half])
                after = statistics.median(s[half + 3 * c::c] or s[half:])  # once re-sized
                print(f"| {name} | {before:.3f} | {after:.3f} | {after / before:.2f} |"
                      f" <!-- wall {wall:.1f} s -->")
                out[name] = after
                if name == "adaptive":
                    mid, lines = result, list(changes.lines)
            slow_down(client, slow, 1.0)
            print(f"\nafter the change, adaptive / equal split: "
                  f"{out['adaptive'] / out['equal split']:.2f}")
            print("\nadaptive run's log:")
            for line in lines:
                print("  " + line)
            print("\nadaptive run, samples per worker per chunk:")
            print(chunk_table(mid.shards, workers, slow))
            return mid

        # ---------------------------------------------- scenario 2: slow from mid-run
        half = args.steps // 2
        mid = change_mid_run(f"scenario 2: worker {slow} slowed x{args.factor} after step "
                             f"{half}", 1.0, args.factor, args.steps)
        if args.svg:
            with open(args.svg, "w") as f:
                f.write(svg_of(mid.shards, slow, f"Samples per worker per chunk; {slow} "
                               f"slowed x{args.factor} after step {half}") + "\n")
            print(f"\nwrote {args.svg}")
        # ---------------------------------------------- scenario 3: a straggler recovers
        # twice the steps: a worker left out is measured again after 2, 4, 8 ... chunks
        change_mid_run(f"scenario 3: worker {slow} slowed x{args.factor} until step "
                       f"{args.steps}, then at full speed", args.factor, 1.0, 2 * args.steps)


def chunk_table(chunks: list[dict[str, Any]], workers: list[str], slow: str) -> str:
    head = "| steps | " + " | ".join(w.rsplit(":", 1)[-1] + (" (slowed)" if w == slow else "")
                                     for w in workers) + " |"
    rows = [head, "|---" * (len(workers) + 1) + "|"]
    for c in chunks:
        rows.append(f"| {c['steps'][0]}-{c['steps'][1]} | " +
                    " | ".join(str(c["sizes"].get(w, 0)) for w in workers) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
