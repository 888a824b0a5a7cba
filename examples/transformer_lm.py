"""A character-level Transformer language model, trained on the Python standard library's own
source files (every machine with Python has them, offline).

    python examples/transformer_lm.py [--epochs 6] [--chars 300000]

The model is the ``transformer`` preset: 2 pre-norm blocks of causal multi-head self-attention
(width 64, 4 heads, context 64) and a GELU MLP, 116,577 parameters. It trains with
DataParallel(2) on a LocalCluster of two worker processes (AdamW, a linear warm-up then a cosine
decay, gradient clipping at norm 1), prints the loss of every epoch, the held-out loss, and a
sample of text generated from a prompt.

Measured (6 epochs over 300,000 characters, 4,218 windows of 64 for training, 792 steps; a
2-core machine shared with other work): the training loss falls 2.598, 1.941, 1.701, 1.533, 1.433,
1.387 nats per character over the 6 epochs, digit for digit the serial trainer's; held-out loss
1.407 (0.632 of next characters right); 107 s with DataParallel(2) (68 s serially in one
process: on two cores the two shards' tasks do not beat one process). A sample after the prompt
reads like Python, e.g. ``self.infunans.rsqub):`` / ``raise 10`` / ``ans = other._may(vene,
self.tredignfort()) -1``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from distributed import Client, LocalCluster

import pnngraph
from pnngraph import data
from pnngraph.nn.presets import transformer
from pnngraph.nn.schedules import Cosine, Warmup

CONTEXT = 64
PROMPT = "def main(argv=None):\n    parser = argparse.ArgumentParser(description=__doc"


def generate(model: pnngraph.Sequential, prompt: str, n: int, seed: int = 0) -> str:
    """``n`` characters after ``prompt``, each drawn from the model's next-character
    distribution given the last CONTEXT characters."""
    rng = np.random.default_rng(seed)
    ids = list(data.encode(prompt.rjust(CONTEXT)))
    for _ in range(n):
        window = np.array(ids[-CONTEXT:], dtype=np.float64)[None, :]
        p = model.predict_proba(window)[0, -1]
        ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return data.decode(ids[-n:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--chars", type=int, default=300_000)
    parser.add_argument("--generate", type=int, default=300, help="Characters to generate.")
    args = parser.parse_args(argv)

    corpus = data.python_source(context=CONTEXT, max_chars=args.chars)
    train, test = corpus.split(0.1, seed=0)
    model = transformer((CONTEXT,), corpus.n_classes or 97, width=64, heads=4, blocks=2)
    batch = 32
    steps = args.epochs * -(-len(train) // batch)
    warmup = min(50, steps // 4 + 1)
    optimizer = pnngraph.AdamW(Warmup(Cosine(3e-3, total_steps=max(1, steps - warmup)), warmup),
                               weight_decay=0.01, clip_norm=1.0)
    print(f"{len(train)} windows of {CONTEXT} characters; {model.n_params} parameters")
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        print("dashboard:", client.dashboard_link)
        start = time.perf_counter()
        result = pnngraph.fit(model, train, strategy=pnngraph.DataParallel(2), client=client,
                              epochs=args.epochs, batch_size=batch, optimizer=optimizer,
                              progress=False)
        seconds = time.perf_counter() - start
    for record in result.history:
        print(f"epoch {record.epoch + 1}: train loss {record.loss:.3f} nats per character")
    scores = result.model.evaluate(test.X, test.y)
    print(f"held-out loss {scores['loss']:.3f}, next-character accuracy {scores['accuracy']:.3f}"
          f"; trained in {seconds:.1f} s")
    print("sample:\n" + PROMPT + generate(result.model, PROMPT, args.generate))


if __name__ == "__main__":
    main()
