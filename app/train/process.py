"""A long job in a child process (:mod:`app.child`) that streams engine events as JSON lines.

A crash, an out-of-memory kill or a ``kill -9`` of the child never takes the window with it: the job ends as
``failed`` with the exit code or signal and the last lines of the child's stderr. :meth:`JobProcess.stop` asks
for a graceful stop (``stop`` on the child's stdin, checked between batches), then terminates after a timeout,
then kills.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal, Slot

from engine.events import from_dict

log = logging.getLogger(__name__)
child_log = logging.getLogger("app.child")

IDLE, STARTING, RUNNING, STOPPING, FINISHED, STOPPED, FAILED = (
    "idle", "starting", "running", "stopping", "finished", "stopped", "failed")
ACTIVE = (STARTING, RUNNING, STOPPING)
#: Keep glibc from unmapping big activation buffers on every pass (2-3x faster training on CPU).
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000",
             "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
           "CRITICAL": logging.CRITICAL}


@dataclass(frozen=True)
class JobState:
    """Where a child job stands. ``message`` says why it ended; ``stderr_tail`` holds the child's last lines."""

    status: str = IDLE
    kind: str = ""
    pid: int = 0
    run_dir: str = ""
    message: str = ""
    exit_code: int | None = None
    stderr_tail: tuple[str, ...] = field(default_factory=tuple)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


def child_command(args: list[str]) -> tuple[str, list[str]]:
    """Program and arguments that run ``app.child`` with ``args`` (a frozen app runs itself with --child)."""
    if getattr(sys, "frozen", False):
        return sys.executable, ["--child", *args]
    return sys.executable, ["-m", "app.child", *args]


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _each_line(buffer: bytes, handle: Callable[[str], None]) -> bytes:
    """Give every complete, non-blank line of ``buffer`` to ``handle`` (decoded, trailing white space removed);
    return the incomplete rest."""
    *lines, rest = buffer.split(b"\n")
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            handle(line)
    return rest


class JobProcess(QObject):
    """Runs one child job at a time; ``event_received`` carries each engine event, ``job_changed`` a JobState."""

    event_received = Signal(object)  # an engine.events dataclass
    job_changed = Signal(object)  # JobState

    def __init__(self, parent: QObject | None = None, stop_timeout_ms: int = 30000,
                 kill_timeout_ms: int = 5000, tail_lines: int = 40) -> None:
        super().__init__(parent)
        self.stop_timeout_ms = stop_timeout_ms
        self.kill_timeout_ms = kill_timeout_ms
        self.state = JobState()
        self.proc: QProcess | None = None
        self._out = b""
        self._err = b""
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self._stop_requested = False
        self._terminated = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._on_timer_timeout)

    # -- control ---------------------------------------------------------------------------------------------
    def start(self, args: list[str], kind: str, run_dir: str = "") -> None:
        """Start ``python -m app.child ARGS``; raises RuntimeError if a job is already running."""
        if self.state.active:
            raise RuntimeError("a job is already running")
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        for k, v in CHILD_ENV.items():
            if not env.contains(k):
                env.insert(k, v)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env.insert("PYTHONPATH", os.pathsep.join(p for p in (root, env.value("PYTHONPATH", "")) if p))
        proc.setProcessEnvironment(env)
        proc.readyReadStandardOutput.connect(self._on_proc_ready_read_standard_output)
        proc.readyReadStandardError.connect(self._on_proc_ready_read_standard_error)
        proc.started.connect(self._on_proc_started)
        proc.finished.connect(self._on_proc_finished)
        proc.errorOccurred.connect(self._on_proc_error_occurred)
        self.proc, self._out, self._err = proc, b"", b""
        self._tail.clear()
        self._stop_requested = self._terminated = False
        program, argv = child_command(args)
        self._set(JobState(STARTING, kind, 0, run_dir))
        log.info("starting %s job: %s %s", kind, program, " ".join(argv[:3]))
        proc.start(program, argv)

    def stop(self) -> None:
        """Ask the child to stop between batches; terminate after ``stop_timeout_ms``, kill after that."""
        if not self.state.active or self.proc is None:
            return
        self._stop_requested = True
        if self.proc.state() == QProcess.ProcessState.Running:
            self.proc.write(b"stop\n")
        self._set(replace(self.state, status=STOPPING, message="stopping after the current batch…"))
        self._timer.start(self.stop_timeout_ms)

    def kill(self) -> None:
        """Kill the child at once (it is reported as stopped)."""
        if self.proc is not None and self.proc.state() != QProcess.ProcessState.NotRunning:
            self._stop_requested = True
            self.proc.kill()

    def wait(self, msecs: int = 30000) -> bool:
        """Block until the child has exited (used only when the application quits)."""
        if self.proc is None or self.proc.state() == QProcess.ProcessState.NotRunning:
            return True
        return self.proc.waitForFinished(msecs)

    def is_running(self) -> bool:
        return self.state.active

    @property
    def pid(self) -> int:
        return int(self.proc.processId()) if self.proc is not None else 0

    def stderr_tail(self) -> list[str]:
        return list(self._tail)

    # -- process signals -------------------------------------------------------------------------------------
    def _set(self, state: JobState) -> None:
        self.state = state
        self.job_changed.emit(state)

    @Slot()
    def _on_proc_started(self) -> None:
        if self.state.status == STARTING:
            self._set(replace(self.state, status=RUNNING, pid=self.pid))

    @Slot()
    def _on_proc_ready_read_standard_output(self) -> None:
        if self.proc is not None:
            self._out = _each_line(self._out + bytes(self.proc.readAllStandardOutput().data()), self._handle_line)

    def _handle_line(self, line: str) -> None:
        try:
            event = from_dict(json.loads(line))
        except (ValueError, TypeError) as exc:
            child_log.info("%s", line)
            log.debug("not an event line (%s)", exc)
            return
        run_dir = getattr(event, "run_dir", None)
        if run_dir and run_dir != self.state.run_dir:
            self.state = replace(self.state, run_dir=run_dir)
        self.event_received.emit(event)

    @Slot()
    def _on_proc_ready_read_standard_error(self) -> None:
        if self.proc is not None:
            self._err = _each_line(self._err + bytes(self.proc.readAllStandardError().data()), self._stderr_line)

    def _stderr_line(self, line: str) -> None:
        self._tail.append(line)
        word = line.split(" ", 1)[0]
        child_log.log(_LEVELS.get(word, logging.INFO), "%s", line)

    @Slot(int, QProcess.ExitStatus)
    def _on_proc_finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._timer.stop()
        if self.proc is not None:  # read what is left
            self._on_proc_ready_read_standard_output()
            self._on_proc_ready_read_standard_error()
        for rest, handler in ((self._out, self._handle_line), (self._err, self._stderr_line)):
            _each_line(rest + b"\n", handler)
        self._out = self._err = b""
        tail = tuple(self._tail)
        crashed = status == QProcess.ExitStatus.CrashExit
        if crashed and self._stop_requested:
            new, msg = STOPPED, "stopped (the process was terminated)"
        elif crashed:
            new, msg = FAILED, (f"the process was killed by {signal_name(code)} (a crash, the out-of-memory "
                                f"killer or a kill from outside)" if code else "the process crashed")
        elif code == 0:
            new, msg = FINISHED, "finished"
        elif code == 130:
            new, msg = STOPPED, "stopped; every finished epoch is saved" if self.state.kind == "train" else "stopped"
        else:
            errors = [ln[len("error: "):] for ln in tail if ln.startswith("error: ")]
            new, msg = FAILED, (errors[-1] if errors else f"the process exited with code {code}")
        log.log(logging.ERROR if new == FAILED else logging.INFO, "%s job %s: %s (exit %s)",
                self.state.kind, new, msg, code if not crashed else signal_name(code))
        proc, self.proc = self.proc, None
        self._set(replace(self.state, status=new, message=msg, exit_code=code if not crashed else -code,
                          stderr_tail=tail))
        if proc is not None:
            proc.deleteLater()

    @Slot(QProcess.ProcessError)
    def _on_proc_error_occurred(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart and self.proc is not None:
            msg = f"the process could not start: {self.proc.errorString()}"
            log.error("%s", msg)
            proc, self.proc = self.proc, None
            self._set(replace(self.state, status=FAILED, message=msg, exit_code=None))
            proc.deleteLater()

    @Slot()
    def _on_timer_timeout(self) -> None:
        if self.proc is None or self.proc.state() == QProcess.ProcessState.NotRunning:
            return
        if not self._terminated:
            log.warning("the job did not stop within %.0f s: terminating it", self.stop_timeout_ms / 1000)
            self._terminated = True
            self.proc.terminate()
            self._timer.start(self.kill_timeout_ms)
        else:
            log.warning("the job did not terminate: killing it")
            self.proc.kill()
