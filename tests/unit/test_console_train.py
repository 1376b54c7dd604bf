"""The driver's step lines (forge_ray/train/progress.py): each logged step once, with an ETA."""

from __future__ import annotations

from forge_ray.train.progress import StepFollower, step_line


def rec(step: int) -> dict:
    return {"step": step, "loss": 3.0, "lm_loss": 3.0, "aux_loss": 0.0, "lr": 1e-3, "grad_norm": 1.0,
            "tokens_per_s": 1000.0, "step_time_s": 0.5, "data_wait_s": 0.01, "mfu": 0.01, "world_size": 2,
            "start_step": 0, "tokens_seen": 0, "time": 0.0, "loss_by_source": {}}


def test_each_logged_step_is_printed_once_in_order():
    written: list[dict] = []
    lines: list[str] = []
    follower = StepFollower("run", 10, read=lambda _: list(written), emit=lines.append)
    follower.poll()  # nothing yet
    written += [rec(1), rec(3)]
    follower.poll()
    follower.poll()  # no new step: no new line
    written.append(rec(9))
    follower.poll()
    assert [line.split()[2] for line in lines] == ["2/10", "4/10", "10/10"]
    assert lines[0].startswith("[train] step") and lines[0].endswith("eta 4s")  # 8 steps x 0.5 s
    assert "eta" not in lines[-1]


def test_a_missing_metrics_file_is_not_an_error():
    def missing(_):
        raise FileNotFoundError("metrics.jsonl")

    lines: list[str] = []
    with StepFollower("run", 10, read=missing, emit=lines.append, period_s=0.01):
        pass
    assert lines == []
    assert "step     5/10" in step_line(rec(4), 10)
