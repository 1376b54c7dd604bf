"""The driver side of a run: plan it (checks that fail before any worker starts), then fit.

    result = run_training(config, dataset)        # dataset: forge_ray.prepare.dataset.PreparedDataset
    result.run_dir, result.checkpoint_dir, result.metrics

The run lives in `<storage_root>/runs/<run>/`: Ray Train's checkpoints (`checkpoint_*`),
`run.json` (resolved config, mixture plan, dataset), `metrics.jsonl`, `tensorboard/`. On an
object-store root Ray Train gets the store as a pyarrow filesystem (`Storage.pyarrow_fs`) and
uploads each checkpoint there; workers write metrics and consumption records to the store too,
and `init_from` may be a URI (each node copies it once into its cache, `registry.local_folder`).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from forge_ray.config import ForgeConfig, config_hash
from forge_ray.config.model import ModelConfig
from forge_ray.config.train import TrainConfig
from forge_ray.errors import ConfigError, ForgeError
from forge_ray.storage import Storage
from forge_ray.train.metrics import StepRecord, read_metrics
from forge_ray.train.progress import StepFollower
from forge_ray.train.worker import WorkerJob, train_loop_per_worker

if TYPE_CHECKING:
    from forge_ray.mixture import MixturePlan
    from forge_ray.prepare.dataset import PreparedDataset

log = logging.getLogger(__name__)


class TrainError(ForgeError):
    """A training run could not be planned or did not finish."""


@dataclass
class TrainResult:
    run: str
    run_dir: str
    checkpoint_dir: str
    model: ModelConfig  # resolved (vocabulary, init_from's architecture)
    plan: MixturePlan
    metrics: list[StepRecord]  # the curve: latest record per logged step
    wall_s: float


def resolve_model(config: ForgeConfig, dataset: PreparedDataset) -> ModelConfig:
    """The model section made concrete: vocabulary from the tokenizer, or an HF checkpoint's architecture."""
    cfg = config.model
    vocab = int(dataset.manifest["tokenizer"]["vocab_size"])
    if cfg.init_from:
        from forge_ray.models.hf import model_config_from_hf
        from forge_ray.registry import local_folder

        try:
            local = local_folder(cfg.init_from)
        except (FileNotFoundError, OSError) as e:
            raise ConfigError("model.init_from", [f"model.init_from: cannot read {cfg.init_from!r}: {e}"]) from None
        if not (Path(local) / "config.json").is_file():
            raise ConfigError("model.init_from", [f"model.init_from: no config.json in {cfg.init_from!r}"])
        try:
            cfg = model_config_from_hf(local, cfg)  # init_from stays as written (each node caches it)
        except ValueError as e:
            raise ConfigError("model.init_from", [f"model.init_from: {e}"]) from None
        if cfg.vocab_size < vocab:
            tok = dataset.manifest["tokenizer"]
            raise ConfigError("model.init_from", [
                f"model.init_from: the checkpoint's vocabulary ({cfg.vocab_size} embeddings, {cfg.init_from}) "
                f"is smaller than the dataset tokenizer's ({vocab} tokens, {tok.get('source') or 'trained'} -> "
                f"{dataset.tokenizer_path}); prepare the data with the checkpoint's tokenizer"])
        return cfg
    if cfg.upcycle_from:  # a dense checkpoint -> this MoE (models/upcycle.py)
        from forge_ray.models.upcycle import upcycled_config

        try:
            cfg = upcycled_config(cfg.upcycle_from, cfg)
        except (OSError, ValueError) as e:
            raise ConfigError("model.upcycle_from", [f"model.upcycle_from: {e}"]) from None
        if cfg.vocab_size < vocab:
            raise ConfigError("model.upcycle_from", [
                f"model.upcycle_from: the checkpoint's vocabulary ({cfg.vocab_size} embeddings, {cfg.upcycle_from}) "
                f"is smaller than the dataset tokenizer's ({vocab} tokens, {dataset.tokenizer_path})"])
        return cfg
    if cfg.vocab_size is not None and cfg.vocab_size < vocab:
        raise ConfigError("model.vocab_size", [
            f"model.vocab_size: {cfg.vocab_size} is smaller than the dataset tokenizer's vocabulary ({vocab})"])
    return cfg if cfg.vocab_size else cfg.model_copy(update={"vocab_size": vocab})


def check_data_fits(config: ForgeConfig, dataset: PreparedDataset) -> None:
    """Fail at plan time when the data cannot feed the workers, naming the fields."""
    t = config.train
    total = sum(dataset.num_sequences(s, "train") for s in dataset.sources)
    need = t.max_workers * t.micro_batch_size
    if total < need:
        raise ConfigError("train", [
            f"train.max_workers x train.micro_batch_size = {t.max_workers} x {t.micro_batch_size} = {need} "
            f"sequences per micro step, but dataset {dataset.dataset}/{dataset.version} has only {total} "
            f"training sequences: lower train.max_workers or train.micro_batch_size"])
    if config.prepare.seq_len != dataset.seq_len:
        log.warning("prepare.seq_len %d differs from the dataset's %d; the dataset's is used",
                    config.prepare.seq_len, dataset.seq_len)
    if dataset.seq_len > config.model.max_seq_len and not config.model.init_from:
        raise ConfigError("model.max_seq_len", [
            f"model.max_seq_len ({config.model.max_seq_len}) is shorter than the dataset's sequences "
            f"({dataset.seq_len} tokens)"])


def check_objective(config: ForgeConfig, dataset: PreparedDataset, model: ModelConfig) -> None:
    """`train.objective` against the data, `train.lora.targets` against the model, before any worker starts."""
    from forge_ray.mixture import MixtureError
    from forge_ray.mixture.datasets import mixed_datasets

    t = config.train
    problems = []
    try:  # an SFT run may mix pre-training datasets in (mixture.datasets): their rows train on every token
        mixed = mixed_datasets(dataset, config.mixture)
    except MixtureError as e:
        raise ConfigError("mixture", [f"mixture: {e}"]) from None
    masked = [f"{d.dataset}/{d.version}" for d in mixed if d.has_loss_mask]
    if t.objective == "sft" and not masked:
        names = ", ".join(f"{d.dataset}/{d.version}" for d in mixed)
        problems.append(f"train.objective 'sft' needs a dataset prepared from chat / instruction sources (a loss "
                        f"mask on the assistant's tokens); {names} has none")
    if t.objective == "pretrain" and masked:
        problems.append(f"dataset {', '.join(masked)} holds conversations with an assistant-only "
                        "loss mask: set train.objective to 'sft'")
    if t.lora is not None:
        attention = {"q_proj", "k_proj", "v_proj", "o_proj"}
        dense_layers = [i for i in range(model.num_layers) if not model.is_moe_layer(i)]
        if not (set(t.lora.targets) & attention) and not dense_layers:
            problems.append(f"train.lora.targets {t.lora.targets} name no module of this model: every layer's MLP "
                            "is an MoE block, whose experts are not adapted; add attention projections")
    if problems:
        raise ConfigError("train", problems)


def default_run_name(config: ForgeConfig) -> str:
    return f"{config.model.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def plan_run(config: ForgeConfig, dataset: PreparedDataset, storage: Storage, run: str) -> WorkerJob:
    from forge_ray.mixture import MixtureError, build_plan
    from forge_ray.models.dry_run import model_size

    model = resolve_model(config, dataset)
    check_data_fits(config, dataset)
    check_objective(config, dataset, model)
    try:
        plan = build_plan(dataset, config.mixture, global_batch_size=config.train.global_batch_size,
                          total_steps=config.train.steps)
    except MixtureError as e:
        raise ConfigError("mixture", [f"mixture: {e}"]) from None
    run_dir = storage.location("runs", run)  # a URI on an object store: workers open it themselves
    if storage.is_local:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    storage.write_json(f"runs/{run}/run.json", {
        "run": run, "dataset": dataset.dataset, "dataset_version": dataset.version,
        "model": json.loads(model.model_dump_json()), "config": json.loads(config.model_dump_json()),
        "config_hash": config_hash(config), "mixture_plan": plan.to_json(),
    })
    size = model_size(model, plan.seq_len)
    return WorkerJob(model=model, train=config.train, plan=plan, run_dir=run_dir, init_from=model.init_from,
                     flops_per_token=size.flops_per_token, config_hash=config_hash(config))


def run_training(config: ForgeConfig, dataset: PreparedDataset, storage: Storage | None = None) -> TrainResult:
    """Plan, then fit on the connected Ray cluster (call `forge_ray.cluster.connect` first)."""
    storage = storage or Storage(config.project.storage_root)
    storage.check_writable()  # an unreachable store or a missing bucket fails here, before planning
    t = config.train
    run = t.run_name or default_run_name(config)
    job = plan_run(config, dataset, storage, run)
    print(job.plan.summary(), flush=True)
    trainer = torch_trainer(train_loop_per_worker, job, t, run, storage)
    start = time.perf_counter()
    result = _fit(trainer, StepFollower(job.run_dir, job.plan.total_steps))
    wall = time.perf_counter() - start
    if result.error is not None or result.checkpoint is None:
        raise TrainError(f"run {run} failed: {result.error or 'no checkpoint was reported'}")
    ckpt = result.checkpoint.path  # on the storage filesystem, without its protocol
    return TrainResult(run=run, run_dir=job.run_dir, checkpoint_dir=ckpt if storage.is_local else storage.fs.unstrip_protocol(ckpt),
                       model=job.model, plan=job.plan, metrics=read_metrics(job.run_dir), wall_s=wall)


def torch_trainer(loop, job, t: TrainConfig, run: str, storage: Storage):
    """Ray Train's TorchTrainer running `loop({"job": job})` on the workers `train` asks for, with
    the run's checkpoints under `<storage_root>/runs/<run>/` (pre-training, SFT and GRPO alike)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    runs_fs, runs_path = storage.pyarrow_fs("runs")
    resources = {"CPU": t.cpus_per_worker, **t.worker_resources}
    if t.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        loop,
        train_loop_config={"job": job},
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=(t.min_workers, t.max_workers) if t.elastic else t.max_workers,
            use_gpu=t.use_gpu, resources_per_worker=resources,
            elastic_resize_monitor_interval_s=t.elastic_monitor_s,
        ),
        run_config=RunConfig(
            name=run, storage_path=runs_path, storage_filesystem=runs_fs,
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
        ),
    )


def _fit(trainer, follower: StepFollower):
    """`trainer.fit()` with the driver's step lines. Ray Train's own SIGINT handler aborts the run,
    then calls sys.exit(0), and stays installed after `fit`: here that exit is the interrupt it
    is (the CLI stops the cluster and says so) and the previous handler comes back."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        with follower:
            return trainer.fit()
    except SystemExit:
        raise KeyboardInterrupt from None
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
