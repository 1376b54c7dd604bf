"""`eval`: what a version must show before it is promoted.

Held-out perplexity per domain (the prepared dataset's eval split), the organisation's KPI
suites (YAML files, see docs/eval.md), the memorisation check over planted canaries, and the
promotion gate's rules.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from forge_ray.config.base import Section


class PerplexityConfig(Section):
    """Held-out perplexity per domain, computed by Ray tasks over the eval shards."""

    max_sequences: int = Field(
        256, ge=1, description="Held-out sequences per domain (packed, seq_len tokens each) scored."
    )
    batch_size: int = Field(8, ge=1, description="Sequences per forward pass.")
    sequences_per_task: int = Field(
        32, ge=1, description="Sequences in one Ray task (the unit of work and of load balancing)."
    )
    workers: int = Field(
        2, ge=1, description="Ray tasks in flight at once; each worker process loads the version once."
    )
    cpus_per_worker: float = Field(1.0, gt=0, description="Logical CPUs each task reserves.")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs each task reserves (0: score on CPU).")
    threads_per_worker: int = Field(1, ge=1, description="torch intra-op threads inside one task.")


class EvalEngineConfig(Section):
    """How KPI suites and the memorisation check reach the model: vLLM, offline or served."""

    backend: Literal["offline", "endpoint"] = Field(
        "offline",
        description="'offline': a `vllm.LLM` engine in a Ray actor loads the version's folder; "
        "'endpoint': an OpenAI-compatible completions endpoint that serves the version.",
    )
    endpoint_url: str | None = Field(
        None,
        description="Base URL of the OpenAI-compatible API (e.g. http://127.0.0.1:8000/v1); "
        "required by backend 'endpoint'.",
    )
    endpoint_model: str | None = Field(
        None, description="Model name sent to the endpoint (default: the forge file's model.name)."
    )
    request_timeout_s: float = Field(120.0, gt=0, description="Timeout of one endpoint request, in seconds.")
    max_model_len: int = Field(
        256, ge=16, description="Context length of the offline engine, in tokens (prompt + answer)."
    )
    kv_cache_gib: float = Field(
        1.0, gt=0, description="KV cache the offline engine reserves on CPU, in GiB (VLLM_CPU_KVCACHE_SPACE)."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype of the offline engine."
    )
    cpus: float = Field(1.0, gt=0, description="Logical CPUs the offline engine's Ray actor reserves.")
    gpus: float = Field(0.0, ge=0, description="GPUs the offline engine's Ray actor reserves (0 on CPU clusters).")

    @model_validator(mode="after")
    def _endpoint_needs_url(self) -> EvalEngineConfig:
        if self.backend == "endpoint" and not self.endpoint_url:
            raise ValueError("backend 'endpoint' needs endpoint_url")
        return self


class MemorisationConfig(Section):
    """Canary strings planted in restricted sources must not come back from their prefixes."""

    enabled: bool = Field(True, description="Run the memorisation check.")
    planted_file: str = Field(
        "{storage_root}/corpora/tickets.planted.json",
        description="JSON file listing the planted canaries ({canaries: [{id, prefix, canary}]}); "
        "may start with '{storage_root}'.",
    )
    context_source: str | None = Field(
        "tickets",
        description="Source whose record (by canary id) gives the text before the prefix, tried as a "
        "second, longer prompt; null: prompt with the prefix alone.",
    )
    context_chars: int = Field(
        200, ge=0, description="Characters of the record before the prefix used as context, in characters."
    )
    max_tokens: int = Field(32, ge=1, description="Tokens generated (greedy) after each prompt.")


class GateConfig(Section):
    """The promotion gate: a candidate is promoted only if every rule holds."""

    max_perplexity_regression_pct: float | None = Field(
        5.0,
        ge=0,
        description="No domain's perplexity may exceed the promoted version's by more than this, in "
        "percent (null: no comparison). Passes when nothing is promoted yet.",
    )
    max_perplexity: dict[str, float] = Field(
        default_factory=dict,
        description="Absolute ceiling of perplexity per domain name (empty: none).",
    )
    require_suites_pass: bool = Field(
        True, description="Every KPI suite must score at or above its own threshold."
    )
    min_kpi_score: float | None = Field(
        None, ge=0, le=1, description="Minimum weighted mean score over all suites, a fraction (null: none)."
    )
    max_canary_leaks: int | None = Field(
        0, ge=0, description="Most planted canaries the model may reproduce (null: not gated)."
    )
    min_kpi_gain_over_base: float | None = Field(
        0.0, ge=-1, le=1,
        description="An SFT version (train.objective sft) is compared with its base (model.init_from) on the "
        "same suites: its weighted KPI score must reach the base's plus this, a fraction (null: not compared).",
    )


class EvalConfig(Section):
    """Held-out perplexity, KPI suites, memorisation check and the promotion gate."""

    perplexity: PerplexityConfig = Field(
        default_factory=PerplexityConfig, description="Held-out perplexity per domain."
    )
    suites: list[str] = Field(
        default_factory=list,
        description="KPI suite files (YAML; relative paths from the working directory). Checked "
        "before any model loads.",
    )
    engine: EvalEngineConfig = Field(
        default_factory=EvalEngineConfig, description="The vLLM engine KPI suites and canaries run on."
    )
    memorisation: MemorisationConfig = Field(
        default_factory=MemorisationConfig, description="The canary memorisation check."
    )
    gate: GateConfig = Field(default_factory=GateConfig, description="Rules a candidate must pass.")
