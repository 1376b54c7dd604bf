"""What an operator sees (issue 22): forge's own lines at default verbosity, and a prompt, clean
stop on Ctrl-C / SIGTERM. Each command runs as a subprocess on its own local Ray cluster, as a
person would run it; the test reads its terminal output and the processes it leaves behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from forge_ray.cluster import free_port
from forge_ray.registry import Registry
from forge_ray.testing.tiny_versions import publish_tiny
from tests.conftest import DEMO_WITHOUT_SYNTHETIC, REPO

# Lines that only the engines print (worker prefixes, Ray Data plans, vLLM / DeepSpeed / Ray
# Train logs): none may reach the terminal at default verbosity.
ENGINE_LINE = re.compile(
    r"pid=\d+(?:, ip=[\d.]+)?\)|ServeReplica|RayTrainWorker|Running Dataset|Execution plan|Starting execution of Dataset"
    r"|vLLM|vllm|EngineCore|deepspeed|DeepSpeed|Reporting training result|PlacementGroupCleaner|NUMA"
    r"|Started a local Ray instance|INFO \d{4}-\d\d-\d\d")
EXIT_WITHIN_S = 10.0
TRAIN = [*DEMO_WITHOUT_SYNTHETIC, "prepare.seq_len=128", "prepare.tokenizer.vocab_size=512",
         "model.hidden_size=64", "model.num_layers=2", "model.num_heads=1", "model.num_kv_heads=1",
         "model.ffn_hidden_size=128", "train.min_workers=1", "train.max_workers=1",
         "train.micro_batch_size=2", "train.global_batch_size=4", "train.steps=400", "train.log_every=1",
         "train.checkpoint_every=400", "train.export=false"]


class Forge:
    """`forge ARGS` in a subprocess whose merged output is collected line by line."""

    def __init__(self, *args: str, cwd: Path = REPO):
        self.command = next(a for a in args if not a.startswith("-"))  # `forge -v train` -> train
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "FORGE_VERBOSE")}
        self.proc = subprocess.Popen([sys.executable, "-m", "forge_ray.cli.main", *args], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, preexec_fn=_sigint_as_at_a_terminal)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        self.kill()
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-60:]))

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def interrupt(self, sig: int = signal.SIGINT) -> tuple[float, list[psutil.Process]]:
        """Send `sig`; (seconds until it exited, its processes still alive 1 s after that)."""
        started = self.descendants()
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
        took = time.monotonic() - t0
        self._reader.join(timeout=5)
        time.sleep(1.0)
        return took, [p for p in started if _alive(p)]

    def stops_on(self, sig: int) -> str:
        """Send `sig` and check what every command promises: gone within 10 s, no process of it left,
        its one-line message. Its whole output, for the caller's own checks."""
        took, left = self.interrupt(sig)
        said = "\n".join(self.lines)
        assert took <= EXIT_WITHIN_S, f"exited {took:.1f} s after {signal.Signals(sig).name}\n{said[-3000:]}"
        assert not left, [(p.pid, p.name()) for p in left]
        assert f"forge {self.command}: interrupted; stopping" in said
        return said

    def kill(self) -> None:
        for p in [*self.descendants(), psutil.Process(self.proc.pid)]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=30)

    def run(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._reader.join(timeout=5)
        return rc


def _sigint_as_at_a_terminal() -> None:
    """A shell starts background jobs (`pytest ... &`, a CI script) with SIGINT ignored, and a child
    inherits that: Python then installs no KeyboardInterrupt handler and the Ctrl-C tests would
    measure nothing. The command under test gets SIGINT as a terminal's Ctrl-C delivers it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def engine_lines(lines: list[str]) -> list[str]:
    """The engines' lines among `lines` (forge's own line saying where their logs went is not one)."""
    return [line for line in lines if ENGINE_LINE.search(line) and not line.startswith("[ray] engine logs")]


@pytest.fixture
def serve_config(tmp_path) -> Path:
    root = tmp_path / "root"
    publish_tiny(str(root), "tiny", "v1", "dense", 1, canary_tokens=4)
    Registry(str(root), "tiny").promote("v1")
    (root / "api_keys").write_text("sk-operator-test\n")
    port = free_port()
    config = {
        "project": {"name": "optest", "storage_root": str(root)},
        "data": {"sources": [{"name": "docs", "uri": "/unused", "format": "jsonl", "license": "MIT",
                              "sensitivity": "public"}]},
        "serve": {"model": "tiny", "port": port, "app_name": "optest",
                  "auth": {"api_keys_file": str(root / "api_keys")}, "engine": {"kv_cache_gib": 0.25}},
    }
    path = tmp_path / "forge.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_stops_within_10s_and_leaves_no_process(serve_config, sig):
    forge = Forge("serve", "-c", str(serve_config))
    forge.wait_for(r"^serving tiny version v1 at http", timeout=420)
    said = forge.stops_on(sig)
    assert not engine_lines(forge.lines), engine_lines(forge.lines)[:20]
    assert re.search(r"^\[ray\] engine logs .*: /\S+", said, re.M)  # where they went, once
    assert sum("engine logs" in line for line in forge.lines) == 1


def test_prepare_then_train_show_forge_lines_and_train_stops_within_10s(demo_config_at):
    sets = [a for o in TRAIN for a in ("--set", o)]
    prepare = Forge("prepare", "-c", str(demo_config_at), *sets)
    assert prepare.run(timeout=600) == 0, "\n".join(prepare.lines[-60:])
    assert not engine_lines(prepare.lines), engine_lines(prepare.lines)[:20]
    assert any(line.startswith("prepared dataset: ") for line in prepare.lines), prepare.lines[-20:]

    train = Forge("train", "-c", str(demo_config_at), *sets)
    train.wait_for(r"^\[train\] step +3/400 ", timeout=600)
    train.stops_on(signal.SIGINT)
    assert not engine_lines(train.lines), engine_lines(train.lines)[:20]
    steps = [m.group(1) for line in train.lines if (m := re.match(r"^\[train\] step +(\d+)/400 ", line))]
    assert len(steps) == len(set(steps)) >= 3  # one line per logged step, from the driver


def test_verbose_brings_the_engines_lines_back(demo_config_at):
    sets = [a for o in TRAIN for a in ("--set", o)]
    prepare = Forge("-v", "prepare", "-c", str(demo_config_at), *sets)
    assert prepare.run(timeout=600) == 0, "\n".join(prepare.lines[-60:])
    assert engine_lines(prepare.lines), prepare.lines[-40:]  # Ray's and its workers' own lines
    assert not any("engine logs" in line for line in prepare.lines)


def test_prepare_stops_within_10s_and_leaves_no_process(demo_config_at):
    sets = [a for o in TRAIN for a in ("--set", o)]
    prepare = Forge("prepare", "-c", str(demo_config_at), *sets)
    prepare.wait_for(r"^\[prepare\] ", timeout=300)  # its progress line: the local cluster is up, work started
    prepare.stops_on(signal.SIGINT)


def test_training_logs_no_placement_group_cleaner_failures_even_verbose(demo_config_at):
    """The cleaner asks the State API whether the controller lives: the local cluster serves it (the
    dashboard) and tells the workers where, so not one ask fails (checked where they would show: -v)."""
    short = [o for o in TRAIN if not o.startswith(("train.steps=", "train.checkpoint_every="))]
    sets = [a for o in [*short, "train.steps=30", "train.checkpoint_every=10"] for a in ("--set", o)]
    assert Forge("prepare", "-c", str(demo_config_at), *sets).run(timeout=600) == 0
    train = Forge("-v", "train", "-c", str(demo_config_at), *sets)
    assert train.run(timeout=600) == 0, "\n".join(train.lines[-60:])
    said = "\n".join(train.lines)
    assert "RayTrainWorker" in said  # verbose: the engines' lines are there
    for failure in ("Failed to query Ray Train Controller actor state", "Found multiple active Ray instances",
                    "PlacementGroupCleaner not available", "Failed to launch PlacementGroupCleaner"):
        assert failure not in said, failure


def test_demo_stops_within_10s_in_training_and_leaves_no_process(demo_config_at):
    """Ctrl-C in the middle of the demo's first training round: the pipeline's workers, the local
    cluster and the demo itself are gone within 10 s."""
    sets = [a for o in TRAIN for a in ("--set", o)]
    demo = Forge("demo", "-c", str(demo_config_at), "--rounds", "1", "--scale", "0.3", *sets)
    demo.wait_for(r"^\[train\] step +3/400 ", timeout=900)
    demo.stops_on(signal.SIGINT)
