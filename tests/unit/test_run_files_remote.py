"""A run's files on a root that is not a local path (fsspec's memory filesystem stands for an object
store: no append, no rename): metrics, consumption records, checkpoints, and folders a config names.
The same code runs against SeaweedFS in tests/integration/test_pipeline_s3.py."""

from __future__ import annotations

import json
import uuid

import torch

from forge_ray.storage import LineLog, Storage, read_lines, url_to_fs


def _root() -> str:
    return f"memory://forge-{uuid.uuid4().hex[:8]}"


def test_line_log_rewrites_whole_lines_and_a_new_writer_continues():
    loc = _root() + "/runs/r/metrics.jsonl"
    log = LineLog(loc)
    log.write('{"step": 0}')
    log.write('{"step": 1}')
    again = LineLog(loc)  # a restarted writer
    again.write('{"step": 1}')
    assert read_lines(loc) == ['{"step": 0}', '{"step": 1}', '{"step": 1}'] and again.lines == 3
    assert read_lines(_root() + "/nothing.jsonl") == []


def test_metrics_and_consumption_on_a_remote_run_dir(monkeypatch):
    from forge_ray.mixture import consumption
    from forge_ray.mixture.consumption import ConsumptionRecord, read_records
    from forge_ray.train.metrics import MetricsWriter, read_all_metrics, read_metrics

    run_dir = Storage(_root()).location("runs", "r")
    assert run_dir.startswith("memory://")
    writer = MetricsWriter(run_dir, tensorboard=False)
    for step in (0, 1, 1, 2):  # step 1 re-run after a restart
        writer.write({"step": step, "loss": float(step)})
    writer.close()
    assert [r["step"] for r in read_metrics(run_dir)] == [0, 1, 2] and len(read_all_metrics(run_dir)) == 4

    monkeypatch.setattr(consumption, "ROLL_LINES", 2)
    rec = ConsumptionRecord(run_dir, rank=0, world_size=1, start_step=0)
    batch = {k: torch.tensor([1, 2]) for k in ("sample", "source", "row")}
    for step in range(5):
        rec.add(step, [batch])
    fs, path = url_to_fs(run_dir + "/consumption")
    assert len(fs.ls(path)) == 3  # rolled every 2 lines: each write stays small
    assert [r["step"] for r in read_records(run_dir)] == [0, 1, 2, 3, 4]


def test_checkpoints_are_found_and_read_from_a_uri():
    from safetensors.torch import save

    from forge_ray.train.checkpoint import OPTIMIZER, STATE, WEIGHTS, read_checkpoint
    from forge_ray.train.runs import latest_checkpoint

    storage = Storage(_root())
    for step in (3, 6):
        d = f"runs/r/checkpoint_{step:06d}"
        storage.write_bytes(f"{d}/{WEIGHTS}", save({"embed_tokens.weight": torch.full((2, 2), float(step))}))
        storage.write_bytes(f"{d}/{OPTIMIZER}", save({"exp_avg/embed_tokens.weight": torch.zeros(2, 2)}))
        storage.write_bytes(f"{d}/{STATE}", json.dumps({"step": step}).encode())
    storage.write_bytes("runs/r/checkpoint_000009/weights.safetensors", b"half written: no state.json")
    latest = latest_checkpoint(storage.location("runs", "r"))
    assert latest == storage.url("runs/r/checkpoint_000006")
    weights, moments, state = read_checkpoint(latest)
    assert state["step"] == 6 and float(weights["embed_tokens.weight"][0, 0]) == 6.0 and moments


def test_a_folder_named_by_uri_is_copied_once_per_content(tmp_path):
    from forge_ray.registry import local_file, local_folder

    storage = Storage(_root())
    storage.write_bytes("tok/tokenizer.json", b"{}")
    storage.write_bytes("tok/sub/x.txt", b"x")
    first = local_folder(storage.url("tok"), str(tmp_path))
    assert open(f"{first}/tokenizer.json").read() == "{}" and open(f"{first}/sub/x.txt").read() == "x"
    assert local_folder(storage.url("tok"), str(tmp_path)) == first
    storage.write_bytes("tok/tokenizer.json", b'{"changed": 1}')
    second = local_folder(storage.url("tok"), str(tmp_path))
    assert second != first and open(f"{second}/tokenizer.json").read() == '{"changed": 1}'
    assert open(local_file(storage.url("tok/sub/x.txt"), str(tmp_path))).read() == "x"
    assert local_folder(str(tmp_path)) == str(tmp_path)  # a local path is used as it is
