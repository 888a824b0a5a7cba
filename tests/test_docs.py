"""The documentation runs as written.

Every fenced ``python`` block of README.md and docs/*.md is saved as a script and run in a fresh
interpreter, from an empty folder: a block is a whole program (imports, data, the
``if __name__ == "__main__":`` guard that a cluster of worker processes needs), so a reader can
paste it into a file and run it. An HTML comment on the line above a fence changes that:

    <!-- doc-test: cluster -->
        the block joins an existing cluster at the placeholder tcp://scheduler-host:8786; the
        test starts a real one on 127.0.0.1 and puts its address in the placeholder's place
    <!-- doc-test: skip (needs a CUDA GPU) -->
        the block cannot run here; the reason is required

Beside them, fast checks: the markers are well formed, the documents name no address a reader
could reach by accident, and every ``pnngraph ...`` line of a ``bash`` block parses.
"""

from __future__ import annotations

import ast
import ipaddress
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
PLACEHOLDER = "tcp://scheduler-host:8786"
TIMEOUT = 270  # seconds per block: generous for a busy 2-core machine, under pytest's 300 s

FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
MARKER = re.compile(r"^<!--\s*doc-test:\s*(.*?)\s*-->$")
SKIP = re.compile(r"^skip \((.+)\)$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it opens (1-based line of the fence), its language, its text and
    the doc-test directive on the line above it (``""`` when none)."""

    path: Path
    line: int
    lang: str
    text: str
    directive: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        fence, lang = opened.groups()
        end = i + 1
        while end < len(lines) and not (lines[end].startswith(fence[0] * len(fence))
                                        and not lines[end].strip(fence[0]).strip()):
            end += 1
        above = lines[i - 1].strip() if i > 0 else ""
        marker = MARKER.match(above)
        blocks.append(Block(path, i + 1, lang.lower(), "\n".join(lines[i + 1 : end]) + "\n",
                            marker.group(1) if marker else ""))
        i = end + 1
    return blocks


BLOCKS = [b for doc in DOCS for b in fenced_blocks(doc)]
PYTHON = [b for b in BLOCKS if b.lang == "python"]


def test_the_docs_have_python_blocks():
    """The collector finds the blocks (a broken fence pattern would make every test vacuous)."""
    assert any(b.path.name == "README.md" for b in PYTHON)
    assert len(PYTHON) >= 5, [b.where for b in PYTHON]


def test_doc_test_markers_are_well_formed():
    """A marker sits right above a python fence and is `cluster` or `skip (reason)`; a cluster
    block uses the placeholder address, and only a cluster block does."""
    marked = {(b.path, b.line - 1) for b in BLOCKS if b.directive}
    for doc in DOCS:
        for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if "doc-test" in line:
                assert (doc, n) in marked, f"{doc.relative_to(ROOT)}:{n}: marker above no fence"
    for b in BLOCKS:
        if not b.directive:
            continue
        assert b.lang == "python", f"{b.where}: a doc-test marker above a {b.lang!r} block"
        assert b.directive == "cluster" or SKIP.match(b.directive), \
            f"{b.where}: expected 'cluster' or 'skip (reason)', got {b.directive!r}"
    for b in PYTHON:
        if b.directive == "cluster":
            assert PLACEHOLDER in b.text, f"{b.where}: a cluster block without {PLACEHOLDER}"
        elif not b.directive:
            assert "scheduler-host" not in b.text, \
                f"{b.where}: names scheduler-host but is not marked <!-- doc-test: cluster -->"


@pytest.fixture(scope="module")
def cluster_address():
    """A real cluster on 127.0.0.1 for the blocks that join one: two worker processes."""
    import distributed

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        yield cluster.scheduler_address


def run_script(text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """Run ``text`` as a script in ``folder``, with this checkout first on the import path."""
    script = folder / "doc_block.py"
    script.write_text(text, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, script.name], cwd=folder, env=env, text=True,
                          capture_output=True, timeout=TIMEOUT, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("block", PYTHON, ids=[b.where for b in PYTHON])
def test_python_block_runs_as_written(block, tmp_path, request):
    skipped = SKIP.match(block.directive)
    if skipped:
        pytest.skip(f"{block.where}: {skipped.group(1)}")
    text = block.text
    if block.directive == "cluster":
        text = text.replace(PLACEHOLDER, request.getfixturevalue("cluster_address"))
    try:
        done = run_script(text, tmp_path)
    except subprocess.TimeoutExpired as err:
        stderr = err.stderr.decode() if isinstance(err.stderr, bytes) else err.stderr or ""
        pytest.fail(f"{block.where} still running after {TIMEOUT} s\n--- stderr ---\n"
                    f"{stderr[-6000:]}")
    assert done.returncode == 0, (
        f"{block.where} exited with {done.returncode}\n--- stderr ---\n{done.stderr[-6000:]}"
        f"\n--- stdout ---\n{done.stdout[-2000:]}")


# --- addresses ---------------------------------------------------------------------------------

DOC_SITES = {
    "docs.dask.org", "distributed.dask.org", "jobqueue.dask.org", "kubernetes.dask.org",
    "docs.bokeh.org", "docs.cupy.dev", "numpy.org", "scikit-learn.org", "docs.python.org",
    "networkx.org", "github.com", "doi.org", "arxiv.org",
}
LOCAL_HOSTS = {"localhost", "scheduler-host", ""}  # "" and "...": a scheme named, no host given
IPV4 = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?![\w.])")
URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://(\[[^\]]*\]|[^\s/:'\"`)<>\]]*)")


def readable_texts() -> list[tuple[str, str]]:
    """(where, text) of every document, and of every docstring of the examples."""
    texts = [(str(doc.relative_to(ROOT)), doc.read_text(encoding="utf-8")) for doc in DOCS]
    for example in EXAMPLES:
        tree = ast.parse(example.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    name = getattr(node, "name", "module")
                    texts.append((f"{example.relative_to(ROOT)} ({name})", doc))
    return texts


def foreign_addresses(text: str) -> list[str]:
    """IPv4 addresses outside 127.0.0.0/8 (0.0.0.0 included) and URL hosts other than the
    local ones, the placeholder and the documentation sites."""
    bad = []
    for found in IPV4.findall(text):
        try:
            address = ipaddress.IPv4Address(found)
        except ValueError:  # 999.1.2.3 and version strings: not an address
            continue
        if not address.is_loopback:
            bad.append(found)
    for _, host in URL.findall(text):
        host = host.strip("[]").lower()
        if host in LOCAL_HOSTS or host == "..." or host in DOC_SITES:
            continue
        try:
            if ipaddress.ip_address(host).is_loopback:
                continue
        except ValueError:
            pass
        bad.append(host)
    return bad


def test_address_check_catches_what_it_should():
    sample = ("tcp://10.0.0.5:8786 http://192.168.1.2/status 8.8.8.8 --host 0.0.0.0 "
              "tcp://head-node:8786 https://example.com/x tcp://[::]:8786")
    assert foreign_addresses(sample) == ["10.0.0.5", "192.168.1.2", "8.8.8.8", "0.0.0.0",
                                         "10.0.0.5", "192.168.1.2", "head-node", "example.com",
                                         "::"]
    fine = ("tcp://127.0.0.1:9 127.0.0.2 http://localhost:8787 tcp://scheduler-host:8786 "
            "tls://... https://docs.dask.org/en/stable/ tcp://[::1]:8786 numpy 2.4.6 3.11.7")
    assert foreign_addresses(fine) == []


def test_docs_name_only_local_addresses():
    """Docs (README.md, docs/*.md, the examples' docstrings) point only at this machine
    (127.0.0.0/8, localhost), at the placeholder name scheduler-host, or at a few documentation
    sites (`DOC_SITES`).

    0.0.0.0 is refused too, even as a bind address in prose: it opens a cluster to every network
    the machine is on, against the docs' own advice (bind to 127.0.0.1, name other machines
    scheduler-host), and a reader copying it gets a listening port nobody asked for.
    """
    bad = {where: found for where, text in readable_texts() if (found := foreign_addresses(text))}
    assert bad == {}


# --- command lines -----------------------------------------------------------------------------


def pnngraph_command_lines() -> list[tuple[str, list[str]]]:
    """(where, argv) of every ``pnngraph ...`` command in the bash blocks of the docs."""
    found = []
    for b in BLOCKS:
        if b.lang not in ("bash", "sh", "shell", "console"):
            continue
        for n, line in enumerate(b.text.splitlines(), b.line + 1):
            for part in re.split(r"&&|\|\||;", line.split(" #")[0]):
                words = shlex.split(part, comments=True)
                if words and words[0] == "pnngraph":
                    found.append((f"{b.where.rsplit(':', 1)[0]}:{n}", words[1:]))
    return found


COMMANDS = pnngraph_command_lines()


def test_the_docs_have_command_lines():
    assert any(argv and argv[0] == "train" for _, argv in COMMANDS), COMMANDS


@pytest.mark.parametrize("argv", [argv for _, argv in COMMANDS],
                         ids=[where for where, _ in COMMANDS])
def test_documented_command_line_parses(argv, tmp_path, monkeypatch):
    """Options and values are parsed (names, types, choices), nothing is run."""
    import click

    from pnngraph.cli import main

    monkeypatch.chdir(tmp_path)
    assert argv, "a bare `pnngraph` line"
    name, *rest = argv
    command = main.get_command(click.Context(main, info_name="pnngraph"), name)
    assert command is not None, f"no command {name!r}"
    with command.make_context(name, rest, parent=click.Context(main, info_name="pnngraph")):
        pass
