"""forge's console output (forge_ray/console.py): progress lines, ETA, engine logs routed to a file."""

from __future__ import annotations

import io
import logging

import pytest

from forge_ray import console


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_duration_and_eta():
    assert console.format_duration(42) == "42s"
    assert console.format_duration(185) == "3m05s"
    assert console.format_duration(3720) == "1h02m"
    assert console.eta_seconds(0, 100, 5) is None
    assert console.eta_seconds(25, 100, 10) == pytest.approx(30.0)
    assert console.eta_seconds(100, 100, 10) == 0.0


def test_render_shows_bar_count_and_eta():
    line = console.render("train", 50, 200, "steps", 60, note="loss 3.2100")
    assert line.startswith("[train] |######------------------| 50/200 steps 25% 1m00s eta 3m00s")
    assert line.endswith("loss 3.2100")
    assert "eta" not in console.render("train", 200, 200, "steps", 60)
    assert console.render("synthesize", 12, None, "records", 3) == "[synthesize] 12 records 3s"


def test_off_a_terminal_it_prints_at_most_once_per_interval_and_the_end():
    out, clock = io.StringIO(), Clock()
    bar = console.Progress("prepare", 1000, "records", stream=out, interval_s=30, tty=False, clock=clock)
    for i in range(1, 1001):
        clock.t += 0.1  # 100 s in all
        bar.update(i)
    bar.close()
    lines = out.getvalue().splitlines()
    assert 3 <= len(lines) <= 6, lines  # ~every 30 s, not 1000 lines
    assert "\r" not in out.getvalue()
    assert lines[-1].startswith("[prepare] |########################| 1,000/1,000 records 100%")


def test_on_a_terminal_it_rewrites_one_line():
    out, clock = io.StringIO(), Clock()
    with console.Progress("eval", 4, "units", stream=out, tty=True, clock=clock) as bar:
        for _ in range(4):
            clock.t += 1
            bar.advance()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, ended once
    assert text.count("\r") == 5  # four updates and the final state
    assert "4/4 units 100%" in text.splitlines()[-1]


def test_engine_logs_go_to_a_file_not_the_terminal(tmp_path, monkeypatch):
    monkeypatch.setenv(console.VERBOSE_ENV, "0")
    terminal = io.StringIO()
    engine = logging.getLogger("vllm.engine.fake_for_test")
    own_handler = logging.StreamHandler(terminal)  # what vLLM / Ray install on their loggers
    engine.addHandler(own_handler)
    engine.setLevel(logging.INFO)
    path = tmp_path / "logs" / console.ENGINE_LOG_FILE
    try:
        assert console.route_engine_logs(str(path)) == str(path)  # the first time: print it
        assert console.route_engine_logs(str(path)) is None  # then quiet
        engine.info("CPU KV cache size is 1 GiB")
        assert terminal.getvalue() == ""
        for h in logging.getLogger("vllm").handlers:
            h.flush()
        assert "CPU KV cache size" in path.read_text()
    finally:
        engine.removeHandler(own_handler)


def test_verbose_leaves_the_engines_alone(tmp_path, monkeypatch):
    monkeypatch.setenv(console.VERBOSE_ENV, "0")  # restored after the test
    console.set_verbose(True)
    assert console.verbose() and console.forward_worker_output()
    assert console.route_engine_logs(str(tmp_path / "x.log")) is None
