"""Runs on storage (their checkpoints, their run.json) and the dry run of a forge file.

    latest_checkpoint(run_dir)          # newest complete checkpoint folder of a run
    print_dry_run(config, preset="llama-7b", workers=8)
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

from forge_ray.config import ForgeConfig
from forge_ray.errors import StorageError
from forge_ray.storage import is_local_location, url_to_fs
from forge_ray.train.checkpoint import STATE


def checkpoints(run_dir: str | Path) -> list[str]:
    """Complete checkpoints of a run (those with state.json), oldest step first: local paths for a
    local `run_dir`, URIs for one on an object store (`Storage.location`)."""
    run_dir = str(run_dir)
    fs, root = url_to_fs(run_dir)
    found = []
    for state in fs.glob(posixpath.join(root, "checkpoint_*", STATE)):
        d = posixpath.dirname(state)
        found.append((json.loads(fs.cat_file(state))["step"], posixpath.basename(d),
                      d if is_local_location(run_dir) else fs.unstrip_protocol(d)))
    return [d for _, _, d in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> str:
    found = checkpoints(run_dir)
    if not found:
        raise StorageError(f"run folder {run_dir} has no complete checkpoint")
    return found[-1]


def print_dry_run(config: ForgeConfig, preset: str | None = None, workers: int | None = None) -> dict:
    """Print (and return) parameters, FLOPs per token and memory per worker of the configured model."""
    from forge_ray.models.dry_run import dry_run, format_dry_run
    from forge_ray.models.presets import preset as preset_cfg

    model = preset_cfg(preset, config.model) if preset else config.model
    if model.vocab_size is None:
        model = model.model_copy(update={"vocab_size": config.prepare.tokenizer.vocab_size})
    figures = dry_run(model, config.train, config.prepare.seq_len, workers)
    print(format_dry_run(figures))
    return figures
