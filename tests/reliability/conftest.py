"""Fixtures of the reliability suite: the bad-input corpus, a run trained on it, and a CLI runner for commands
that must run as their own process (to be killed)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from engine.cli import main as cli

from ..conftest import ROOT
from .corpus import Corpus, build_corpus

TINY = ["--model", "smallnet", "--img-size", "32", "--batch-size", "8", "--seed", "1"]


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def err_lines(self) -> list[str]:
        """stderr without OpenCV's own decoder chatter (libpng prints "libpng error: ..." itself)."""
        return [line for line in self.err.splitlines() if line.strip() and not line.startswith("libpng ")]


def run_cli(*argv: str | os.PathLike) -> CliResult:
    """``fieldmark ARGV`` in this process (the same ``main`` the console script calls), output captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli([str(a) for a in argv])
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these machines have 2 cores shared by several jobs, and OpenMP's spinning threads
    make small models 10-30x slower under load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus") / "data")


@pytest.fixture(scope="session")
def corpus_run(corpus, tmp_path_factory) -> tuple[Path, CliResult]:
    """`fieldmark train` on the corpus (smallnet, 32 px, 1 epoch): the run folder and what the command said."""
    run = tmp_path_factory.mktemp("corpus-run") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures run before the function-scoped one_thread
    try:
        result = run_cli("train", corpus.root, "--out", run, "--epochs", "1", *TINY)
    finally:
        torch.set_num_threads(before)
    return run, result


class ForkCli:
    """A process that imported the engine once and forks one child per command (see forkcli.py): `fieldmark`
    commands as separate processes, which a test may SIGKILL, without paying 5-15 s of imports for each."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.forkcli"], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._count = 0

    def _ask(self, req: dict) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server died (exit {self.proc.poll()})")
        return json.loads(line)

    def start(self, *argv: str | os.PathLike, kill: tuple[float, float] | None = None) -> "Child":
        """Fork ``fieldmark ARGV``; ``kill=(at, delay)``: a training command SIGKILLs itself at a batch picked by
        ``at`` in [0, 1) among those it has left, ``delay`` s after that batch ends (forkcli's "kill" request)."""
        self._count += 1
        out, err = self.workdir / f"cmd{self._count}.out", self.workdir / f"cmd{self._count}.err"
        out.touch()
        err.touch()
        req = {"op": "run", "argv": [str(a) for a in argv], "stdout": str(out), "stderr": str(err)}
        if kill is not None:
            req["kill"] = {"at": kill[0], "delay": kill[1]}
        reply = self._ask(req)
        return Child(self, int(reply["pid"]), out, err)

    def wait(self, pid: int) -> int:
        return int(self._ask({"op": "wait", "pid": pid})["status"])

    def close(self) -> None:
        """Stop the server (its children have all been waited for by then)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@dataclass
class Child:
    server: ForkCli
    pid: int
    out: Path
    err: Path
    _pos: int = 0
    _buf: str = ""

    def events(self, timeout: float = 120.0):
        """Yield the JSON events the command prints, as they come; stops when the process has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.out, encoding="utf-8") as fh:
                fh.seek(self._pos)
                chunk = fh.read()
                self._pos = fh.tell()
            self._buf += chunk
            *lines, self._buf = self._buf.split("\n")
            for line in lines:
                if line.startswith("{"):
                    yield json.loads(line)
            if not chunk:
                if not _alive(self.pid):
                    return
                time.sleep(0.005)
        raise TimeoutError(f"command {self.pid} ran past {timeout} s")

    def wait(self) -> int:
        return self.server.wait(self.pid)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, killed and not yet reaped, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture(scope="module")
def fork_cli(tmp_path_factory):
    server = ForkCli(tmp_path_factory.mktemp("forkcli"))
    yield server
    server.close()
