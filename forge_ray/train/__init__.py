"""Training on Ray Train + DeepSpeed: a run on the prepared dataset, checkpointed, elastic.

    from forge_ray.train import run_training
    result = run_training(config, dataset)   # dataset: PreparedDataset; -> TrainResult
    result.run_dir, result.checkpoint_dir, result.metrics

Publishing the result is the export room's (`forge_ray.export.export_run`), which may import
this one, never the other way round; `forge train` and the pipeline call one after the other.
"""

from forge_ray.train.driver import TrainError, TrainResult, run_training

__all__ = ["TrainError", "TrainResult", "run_training"]
