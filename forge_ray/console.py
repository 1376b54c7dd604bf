"""forge's console output: stage lines, progress with an ETA, and the engines' logs kept in files.

    from forge_ray import console
    console.stage("prepare", "demo v3")                  # one line: "[prepare] demo v3"
    with console.Progress("train", total=200, unit="steps") as bar:
        bar.update(20, note="loss 3.21")                  # a bar with its ETA

At default verbosity forge's lines are the terminal's: Ray's, Ray Data's, DeepSpeed's and vLLM's
loggers write to a file (`route_engine_logs`, its path printed once), and the cluster does not
forward its workers' output (`forward_worker_output`). `forge -v` (FORGE_VERBOSE=1) brings them back.
On a terminal a progress bar is one line updated in place; otherwise (a job log, a pipe) it prints
a line at most every `interval_s` and at the end, so a log file stays short.

A module directly under forge_ray/ (foundation): every stage may use it; it imports no engine.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

VERBOSE_ENV = "FORGE_VERBOSE"
# Loggers of the engines forge drives (and their children): files only, unless verbose.
ENGINE_LOGGERS = ("ray", "deepspeed", "vllm", "torch", "transformers", "datasets", "urllib3", "filelock",
                  "fsspec", "asyncio", "httpx", "uvicorn", "numexpr", "presidio-analyzer", "tldextract")
ENGINE_LOG_FILE = "forge-engines.log"


def verbose() -> bool:
    """`forge -v` (or FORGE_VERBOSE=1 in the environment of a job)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def set_verbose(flag: bool) -> None:
    """Record the verbosity where child processes and `connect` read it."""
    os.environ[VERBOSE_ENV] = "1" if flag else "0"


def forward_worker_output() -> bool:
    """Whether Ray should stream its workers' stdout/stderr to this process (`log_to_driver`)."""
    return verbose()


def say(line: str, stream: TextIO | None = None) -> None:
    """One line of forge's own output."""
    print(line, file=stream or sys.stdout, flush=True)


def stage(name: str, what: str = "") -> None:
    """A stage's one line, "[name] what"; engine loggers configured since the last call are routed
    to the log file first (Ray Data and Serve set up their loggers when first imported)."""
    if _routed_to:
        route_engine_logs(_routed_to)
    say(f"[{name}] {what}".rstrip())


def format_duration(seconds: float) -> str:
    """`42s`, `3m05s`, `1h02m`."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta_seconds(done: float, total: float, elapsed: float) -> float | None:
    """Time left at the rate so far; None before there is a rate."""
    if done <= 0 or elapsed <= 0 or total <= done:
        return None if done <= 0 or elapsed <= 0 else 0.0
    return elapsed * (total - done) / done


def render(label: str, done: float, total: float | None, unit: str, elapsed: float,
           note: str = "", width: int = 24) -> str:
    """`[train] |#########---------| 120/200 steps 60% 1m10s eta 47s  loss 3.21` (no total: a count)."""
    count = f"{_num(done)}/{_num(total)} {unit}" if total else f"{_num(done)} {unit}"
    if total:
        frac = min(1.0, max(0.0, done / total))
        filled = int(round(frac * width))
        eta = eta_seconds(done, total, elapsed)
        tail = f" eta {format_duration(eta)}" if eta is not None and frac < 1 else ""
        line = f"[{label}] |{'#' * filled}{'-' * (width - filled)}| {count.strip()} {frac:.0%} {format_duration(elapsed)}{tail}"
    else:
        line = f"[{label}] {count.strip()} {format_duration(elapsed)}"
    return f"{line}  {note}" if note else line


def _num(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.1f}"


class Progress:
    """A progress display for work of known size (None: a running count).

    On a terminal it rewrites one line; elsewhere it prints a line when `interval_s` has passed
    since the last one, and always the last state on `close`. `clock` and `tty` are injectable
    for tests.
    """

    def __init__(self, label: str, total: float | None, unit: str = "", *, stream: TextIO | None = None,
                 interval_s: float = 30.0, tty: bool | None = None, clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval_s, self.clock = interval_s, clock
        self.start = clock()
        self.done: float = 0
        self.note = ""
        self._last_print: float | None = None
        self._dirty = False
        self._closed = False

    def update(self, done: float, note: str = "") -> None:
        """Set the amount done (not an increment) and an optional note (e.g. the loss)."""
        self.done, self.note = done, note or self.note
        self._dirty = True
        now = self.clock()
        if self.tty:
            self._write(now, end="")
        elif self._last_print is None or now - self._last_print >= self.interval_s:
            self._write(now)

    def advance(self, n: float = 1, note: str = "") -> None:
        self.update(self.done + n, note)

    def close(self, note: str = "") -> None:
        """The final state, on a line of its own."""
        if self._closed:
            return
        self._closed = True
        self.note = note or self.note
        if self.tty or self._dirty or self._last_print is None:
            self._write(self.clock())  # on a terminal this also ends the updated line

    def _write(self, now: float, end: str = "\n") -> None:
        line = render(self.label, self.done, self.total, self.unit, now - self.start, self.note)
        if self.tty:
            line = "\r\x1b[2K" + line  # back to the line's start, clear it
        self.stream.write(line + end)
        self.stream.flush()
        self._last_print, self._dirty = now, False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- the engines' logs -------------------------------------------------------------------------

_routed_to: str | None = None
_file_handler: logging.Handler | None = None


def route_engine_logs(path: str) -> str | None:
    """Send the engine loggers of this process to the file `path` instead of the terminal (default
    verbosity only; idempotent, so it can run again after an engine configured a logger). Returns
    the path when it starts routing to it, None after that or when verbose: the caller prints it once."""
    global _routed_to, _file_handler
    if verbose():
        return None
    first = _routed_to != path  # a new file (a later run in this process) is printed again
    if first:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if _file_handler is not None:
            _file_handler.close()
        _file_handler = logging.FileHandler(path, encoding="utf-8")
        _file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        _routed_to = path
    names = set(ENGINE_LOGGERS) | {n for n in logging.root.manager.loggerDict
                                   if n.split(".")[0] in ENGINE_LOGGERS}
    for name in names:
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if h is not _file_handler and not isinstance(h, logging.FileHandler):
                logger.removeHandler(h)  # a terminal handler (Ray's, vLLM's own)
        if name in ENGINE_LOGGERS or logger.handlers:  # a root of an engine, or one that stops propagating
            if _file_handler not in logger.handlers:
                logger.addHandler(_file_handler)
            logger.propagate = False
    return path if first else None


def engine_log_dir() -> str | None:
    """The file the engines' logs of this process go to, once routed."""
    return _routed_to
