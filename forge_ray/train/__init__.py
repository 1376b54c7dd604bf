"""Training on Ray Train + DeepSpeed, and the one call the pipeline uses.

    from forge_ray.train import train_model
    version_dir = train_model(config, dataset)   # run, then export the result as a registry candidate

`run_training` (trainer.py) is the run alone; `forge_ray.export.export_run` the export alone.
"""

from forge_ray.train.trainer import TrainError, TrainResult, run_training


def train_model(config, dataset, storage=None) -> str:
    """Train `config` on the prepared `dataset`, export it as a candidate; return the version's path."""
    from forge_ray.export import export_run
    from forge_ray.storage import Storage

    storage = storage or Storage(config.project.storage_root)
    result = run_training(config, dataset, storage)
    return export_run(result, config, dataset, storage).path


__all__ = ["TrainError", "TrainResult", "run_training", "train_model"]
