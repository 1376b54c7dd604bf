"""`train`: the Ray Train + DeepSpeed run: workers, batch sizes, optimiser, schedule, checkpoints.

Batch sizes are in sequences of `prepare.seq_len` tokens. The global batch stays the same at
every world size in [min_workers, max_workers] (gradient accumulation absorbs the difference), so
a resized run keeps its schedule and its data cursor.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from forge_ray.config.base import Section
from forge_ray.config.sft import LoraConfig, SftRoundConfig


class TrainConfig(Section):
    """Ray Train (TorchTrainer, Train V2) with a DeepSpeed engine in each worker."""

    steps: int = Field(100, ge=1, description="Optimizer steps in the run (count).")
    rounds: int = Field(
        1,
        ge=1,
        description="Training rounds of the pipeline job (count): each later round continues from the last "
        "promoted version on a reshuffled mix, is evaluated, and is hot-loaded if the gate promotes it.",
    )
    run_name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="Run folder <storage_root>/runs/<run_name>/; unset: '<model.name>-<UTC time>'. "
        "Reusing the name of a run with checkpoints resumes it.",
    )
    min_workers: int = Field(1, ge=1, description="Fewest Ray Train workers the run keeps going with (count).")
    max_workers: int = Field(
        1, ge=1, description="Most workers (count); min < max makes the run elastic (it grows and shrinks)."
    )
    cpus_per_worker: float = Field(1.0, gt=0, description="Logical CPUs each worker reserves (count).")
    use_gpu: bool = Field(False, description="One GPU per worker (CUDA, NCCL) instead of CPU (gloo).")
    worker_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Extra custom Ray resources each worker reserves (name -> amount), to pin workers to nodes.",
    )
    torch_threads: int | None = Field(
        None, ge=1, description="Intra-op threads per worker (count); unset: the CPUs it reserves."
    )
    micro_batch_size: int = Field(4, ge=1, description="Sequences per worker per forward/backward (sequences).")
    global_batch_size: int = Field(
        8,
        ge=1,
        description="Sequences per optimizer step over all workers (sequences): micro_batch_size x "
        "gradient accumulation x workers, for every worker count in [min_workers, max_workers].",
    )
    zero_stage: int = Field(
        2,
        ge=1,
        le=3,
        description="DeepSpeed ZeRO stage: 1 (optimizer state) or 2 (+ gradients) "
        "partitioned over data-parallel ranks. 3 is refused: native DeepSpeed MoE cannot use it.",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="'auto': bf16 on a GPU that supports it, else fp32 (CPUs)."
    )
    activation_checkpointing: bool = Field(
        False, description="Keep only each decoder block's input and recompute the block in the backward "
        "pass: far less activation memory (the dry run shows both) for about one more forward of compute.",
    )
    lr: float = Field(3e-3, gt=0, description="Peak learning rate, reached after warmup (per step).")
    min_lr_ratio: float = Field(
        0.1, ge=0, le=1, description="Final learning rate of the cosine decay, as a fraction of lr (ratio)."
    )
    warmup_steps: int = Field(10, ge=0, description="Linear warmup from 0 to lr (steps).")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decoupled weight decay (per step, x lr).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW (beta1, beta2) (dimensionless).")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon (dimensionless).")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this (L2 norm; 0: off).")
    seed: int = Field(0, description="Seed of the initial weights; step k of rank r reseeds with (seed, k, r).")
    checkpoint_every: int = Field(
        50, ge=1, description="Checkpoint every N steps (steps); one is always written at the end."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept in the run folder (count).")
    max_failures: int = Field(
        3, ge=-1, description="Worker-group failures survived by restarting from the last checkpoint (-1: no limit)."
    )
    elastic_monitor_s: float = Field(
        10.0, gt=0, description="How often an elastic run checks whether it can grow (seconds)."
    )
    log_every: int = Field(1, ge=1, description="A log line and a metrics record every N steps (steps).")
    report_every: int = Field(
        10,
        ge=1,
        description="Steps between `ray.train.report` calls that carry no checkpoint (steps). Ray Train "
        "takes one report per controller poll (every 2 s), so reporting every sub-second step stalls it.",
    )
    tensorboard: bool = Field(True, description="Also write TensorBoard event files under the run folder.")
    peak_tflops_per_worker: float | None = Field(
        None,
        gt=0,
        description="Peak dense TFLOP/s of one worker's device, for the MFU estimate (TFLOP/s); unset: "
        "a table of known GPUs, or for CPUs cores x clock x SIMD width.",
    )
    export: bool = Field(True, description="Export the final model as a registry candidate after the run.")
    objective: Literal["pretrain", "sft", "grpo"] = Field(
        "pretrain",
        description="'pretrain': next-token loss on every real token; 'sft': instruction tuning, the loss on "
        "the assistant's tokens only (needs a dataset prepared from chat / instruction sources; docs/sft.md); "
        "'grpo': reinforcement learning on KPI rewards (the `rl` section; docs/rl.md).",
    )
    lora: LoraConfig | None = Field(
        None, description="Low-rank adapters with the base frozen (docs/sft.md); unset: full fine-tuning."
    )
    sft_round: SftRoundConfig = Field(
        default_factory=SftRoundConfig, description="`forge demo`'s optional instruction-tuning round (docs/sft.md)."
    )

    @model_validator(mode="after")
    def _batches(self) -> TrainConfig:
        if self.min_workers > self.max_workers:
            raise ValueError(
                f"train.min_workers ({self.min_workers}) exceeds train.max_workers ({self.max_workers})"
            )
        for w in range(self.min_workers, self.max_workers + 1):
            if self.global_batch_size % (self.micro_batch_size * w):
                raise ValueError(
                    f"train.global_batch_size ({self.global_batch_size}) must be a multiple of "
                    f"train.micro_batch_size ({self.micro_batch_size}) x workers for every worker count "
                    f"in [train.min_workers, train.max_workers] = [{self.min_workers}, {self.max_workers}]; "
                    f"{w} workers do not divide it"
                )
        return self

    def accumulation(self, world_size: int) -> int:
        """Micro batches per optimizer step on each of `world_size` workers."""
        return self.global_batch_size // (self.micro_batch_size * world_size)

    @property
    def elastic(self) -> bool:
        return self.min_workers < self.max_workers


def check_train_against_model(model, train: TrainConfig) -> list[str]:
    """Cross-section rules between `model` and `train` (called by the forge file's validator)."""
    problems = []
    if train.zero_stage == 3:
        why = (
            "native DeepSpeed MoE (model.family 'moe') refuses ZeRO stage 3"
            if model.family == "moe"
            else "forge's world-size-independent checkpoints need full parameters on each rank"
        )
        problems.append(f"train.zero_stage 3 is not supported: {why}; use 1 or 2")
    if model.family == "moe":
        ep = model.moe.expert_parallel_size
        bad = [w for w in range(train.min_workers, train.max_workers + 1) if w % ep]
        if bad:
            problems.append(
                f"model.moe.expert_parallel_size ({ep}) must divide every worker count in "
                f"[train.min_workers, train.max_workers] = [{train.min_workers}, {train.max_workers}]; "
                f"it does not divide {bad}"
            )
    return problems
