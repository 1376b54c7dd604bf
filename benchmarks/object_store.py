"""Object-store benchmark: checkpoint save / restore and prepare throughput, SeaweedFS against a local root.

    .venv/bin/python benchmarks/object_store.py [--quick]

Both roots in the same run, on the same machine: a local folder and `s3://bench/<prefix>` on a
SeaweedFS server started here (`forge_ray.testing.object_store`, loopback; so the figures are the
cost of the S3 protocol, the server and the copies, not of a network).

- Checkpoint save: a forge checkpoint folder (`train/checkpoint.py`: fp32 weights + Adam moments,
  `--mb` of weights) persisted the way Ray Train does it (its `_upload_to_fs_path`: pyarrow
  `copy_files` to the run's storage filesystem, `Storage.pyarrow_fs`), then every file's size checked
  on the store (`storage.verify_copy`, as forge's checkpoint upload does). Restore: what a restarted
  worker does, `Checkpoint(path, filesystem).as_directory()` then `read_checkpoint`. Median of
  `--repeats`, local and S3 alternated.
- Prepare: `prepare_dataset` of the embedded corpora (written to each root first, untimed) on one
  local Ray cluster, MB of corpora per second of wall clock; local and S3 alternated.

`ratio_checkpoint_save_s3_vs_local` and `ratio_checkpoint_restore_s3_vs_local` are seconds on S3 over
seconds locally (above 1: slower); `ratio_prepare_s3_vs_local` is MB/s on S3 over MB/s locally (below
1: slower). No goal yet (issue 21). Writes benchmarks/results/object_store.json (object_store.quick.json
with --quick); the last line printed holds the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"
BUCKET = "bench"


def checkpoint_folder(folder: str, weights_mb: float) -> int:
    """A forge checkpoint of about `weights_mb` MB of fp32 weights (and twice that of moments); bytes."""
    import torch

    from forge_ray.train.checkpoint import write_checkpoint

    n = int(weights_mb * 1e6 / 4 / 8)
    g = torch.Generator().manual_seed(0)
    weights = {f"layers.{i}.w": torch.randn(n, generator=g) for i in range(8)}
    moments = {f"{k}/{name}": torch.randn(n, generator=g) for name in weights for k in ("exp_avg", "exp_avg_sq")}
    state = {"step": 1, "tokens_seen": 0, "plan_id": "bench", "seed": 0, "world_size": 1,
             "expert_parallel_size": 1, "config_hash": "bench", "metrics": {}, "rng_torch_seed": 0}
    write_checkpoint(folder, weights, moments, state)
    return sum(f.stat().st_size for f in Path(folder).iterdir())


def save_and_restore(storage, local_ckpt: str, name: str) -> tuple[float, float]:
    """(seconds to persist the folder as Ray Train does, seconds to bring it back and read it)."""
    from ray.train import Checkpoint
    from ray.train.v2._internal.execution.storage import _upload_to_fs_path

    from forge_ray.storage import local_sizes, verify_copy
    from forge_ray.train.checkpoint import read_checkpoint

    fs, path = storage.pyarrow_fs("runs", "bench", name)
    t0 = time.perf_counter()
    _upload_to_fs_path(local_ckpt, fs, path)
    # Checked as forge's checkpoint upload checks it (pyarrow's copy_files can swallow a failed
    # multipart upload): a checkpoint missing a file fails here instead of looking fast.
    verify_copy(local_sizes(local_ckpt), path, fs)
    save = time.perf_counter() - t0
    t0 = time.perf_counter()
    with Checkpoint(path, filesystem=fs).as_directory() as d:
        weights, moments, _ = read_checkpoint(d)
    restore = time.perf_counter() - t0
    assert weights and moments
    fs.delete_dir(path)  # the test store is small (16 volumes of 64 MB): keep one checkpoint at a time
    return save, restore


def bench_checkpoints(roots: dict, weights_mb: float, repeats: int) -> dict:
    from forge_ray.storage import Storage

    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="forge-bench-ckpt-") as tmp:
        size = checkpoint_folder(tmp, weights_mb)
        times: dict = {k: {"save": [], "restore": []} for k in roots}
        for i in range(repeats):
            for kind, root in roots.items():
                save, restore = save_and_restore(Storage(root), tmp, f"ckpt-{i}")
                times[kind]["save"].append(save)
                times[kind]["restore"].append(restore)
                print(f"[checkpoint] {kind:5s} #{i + 1}: save {save:.2f} s, restore {restore:.2f} s", flush=True)
    out["checkpoint_mb"] = round(size / 1e6, 1)
    for kind, t in times.items():
        out[f"checkpoint_save_s_{kind}"] = round(statistics.median(t["save"]), 3)
        out[f"checkpoint_restore_s_{kind}"] = round(statistics.median(t["restore"]), 3)
    return out


def bench_prepare(roots: dict, scale: float, repeats: int) -> dict:
    from forge_ray.config import load_config
    from forge_ray.corpora import write_corpora
    from forge_ray.prepare.run import prepare_dataset
    from forge_ray.storage import Storage

    mb: dict = {}
    secs: dict = {k: [] for k in roots}
    for i in range(repeats):
        for kind, base in roots.items():
            root = f"{base}/prepare-{i}"  # a fresh root each time: nothing already prepared
            storage = Storage(root)
            write_corpora(storage, scale=scale)
            mb[kind] = sum(storage.fs.du(storage.path("corpora"), total=False).values()) / 1e6
            config = load_config(REPO / "jobs" / "configs" / "demo.yaml", [
                f"project.storage_root={root}", "prepare.seq_len=128", "prepare.tokenizer.vocab_size=512"])
            t0 = time.perf_counter()
            prepare_dataset(config, storage)
            secs[kind].append(time.perf_counter() - t0)
            print(f"[prepare] {kind:5s} #{i + 1}: {mb[kind]:.1f} MB in {secs[kind][-1]:.1f} s", flush=True)
    out: dict = {"prepare_input_mb": round(mb["local"], 2)}
    for kind in roots:
        s = statistics.median(secs[kind])
        out[f"prepare_s_{kind}"] = round(s, 2)
        out[f"prepare_mb_per_s_{kind}"] = round(mb[kind] / s, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small checkpoint and corpus, one prepare each")
    ap.add_argument("--mb", type=float, default=None, help="MB of fp32 weights in the checkpoint")
    args = ap.parse_args()
    # The test store has 16 volumes of 64 MB: a checkpoint is 3x its weights, kept per repeat.
    weights_mb = args.mb or (8.0 if args.quick else 32.0)
    scale, prepare_repeats, ckpt_repeats = (0.05, 1, 3) if args.quick else (0.2, 2, 5)

    import forge_ray  # noqa: F401  (offline environment before Ray is imported)
    from forge_ray.cluster import connect
    from forge_ray.testing.object_store import ObjectStore

    local_base = tempfile.mkdtemp(prefix="forge-bench-local-")
    started = time.time()
    with ObjectStore() as store:
        store.create_bucket(BUCKET)
        os.environ.update(store.env)  # before Ray starts: its workers inherit the store's settings
        roots = {"local": local_base, "s3": f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"}
        result = {"quick": args.quick, "store": "SeaweedFS (weed server -s3) on loopback",
                  **bench_checkpoints(roots, weights_mb, ckpt_repeats)}
        connect(num_cpus=8, object_store_mb=1024)
        result.update(bench_prepare(roots, scale, prepare_repeats))
    shutil.rmtree(local_base, ignore_errors=True)
    result["ratio_checkpoint_save_s3_vs_local"] = round(result["checkpoint_save_s_s3"] / result["checkpoint_save_s_local"], 3)
    result["ratio_checkpoint_restore_s3_vs_local"] = round(
        result["checkpoint_restore_s_s3"] / result["checkpoint_restore_s_local"], 3)
    result["ratio_prepare_s3_vs_local"] = round(result["prepare_mb_per_s_s3"] / result["prepare_mb_per_s_local"], 3)
    result["meaning"] = ("checkpoint ratios: seconds on S3 / seconds locally (above 1 is slower); prepare ratio: "
                         "MB/s on S3 / MB/s locally (below 1 is slower)")
    result["wall_s"] = round(time.time() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "object_store.quick.json" if args.quick else "object_store.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"ratio_checkpoint_save_s3_vs_local {result['ratio_checkpoint_save_s3_vs_local']}  "
          f"ratio_checkpoint_restore_s3_vs_local {result['ratio_checkpoint_restore_s3_vs_local']}  "
          f"ratio_prepare_s3_vs_local {result['ratio_prepare_s3_vs_local']}")


if __name__ == "__main__":
    main()
