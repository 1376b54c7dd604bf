"""`serve`: the OpenAI-compatible endpoint (Ray Serve + vLLM) and its hot swap of promoted versions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from forge_ray.config.base import Section


class AutoscalingConfig(Section):
    """Serve autoscaling of the model replicas (replaces a fixed `num_replicas`)."""

    min_replicas: int = Field(1, ge=1, description="Fewest model replicas kept running.")
    max_replicas: int = Field(2, ge=1, description="Most model replicas the autoscaler may start.")
    target_ongoing_requests: float = Field(
        8.0, gt=0, description="Requests in flight per replica the autoscaler aims for."
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self


class ReplicasConfig(Section):
    """How many model replicas (each one vLLM engine) serve, and what each holds."""

    num_replicas: int = Field(1, ge=1, description="Fixed number of model replicas (ignored with autoscaling).")
    autoscaling: AutoscalingConfig | None = Field(
        None, description="Autoscale between min and max replicas instead of a fixed number."
    )
    max_ongoing_requests: int = Field(
        32, ge=1, description="Requests one replica accepts at once; more wait in Serve's queue."
    )
    num_cpus: float = Field(
        1.0, gt=0, description="Logical CPUs (Ray scheduling tokens) each model replica reserves."
    )


class ServeEngineConfig(Section):
    """vLLM engine settings of every replica."""

    max_model_len: int = Field(256, ge=16, description="Context length in tokens (prompt + completion).")
    kv_cache_gib: float = Field(
        1.0, gt=0, description="KV cache per engine in GiB (vLLM kv_cache_memory_bytes; fractions allowed)."
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32",
        description="Compute dtype. Canaries are recorded in float32; another dtype may fail the swap check.",
    )
    max_num_seqs: int = Field(16, ge=1, description="Sequences one engine batches at once.")
    enforce_eager: bool = Field(True, description="Skip graph compilation (faster start on CPU).")
    in_place_architectures: list[str] = Field(
        default_factory=lambda: ["LlamaForCausalLM"],
        description="Architectures swapped in place with vLLM reload_weights (proven exact by the "
        "canary check); others, and any change of config or tokenizer, take the surge path.",
    )


class AuthConfig(Section):
    """API keys, read by each model replica (the HTTP ingress): env var on its node, or a file; never logged."""

    api_keys_env: str = Field("FORGE_API_KEYS", description="Environment variable with comma-separated API keys.")
    api_keys_file: str | None = Field(None, description="File with one API key per line (# comments allowed).")
    admin_keys_env: str = Field("FORGE_ADMIN_KEYS", description="Environment variable with admin keys.")
    admin_keys_file: str | None = Field(None, description="File with one admin key per line.")


class SwapConfig(Section):
    """The hot swap: how promotions are noticed and checked."""

    watch_interval_s: float = Field(2.0, gt=0, description="Seconds between polls of the promoted pointer.")
    canary_match_tokens: int | None = Field(
        None, ge=1, description="Greedy tokens per canary that must match (None: all recorded)."
    )
    drain_timeout_s: float = Field(
        60.0, gt=0, description="Seconds an in-place swap waits for in-flight requests to finish."
    )


class ServeConfig(Section):
    """Ray Serve + vLLM endpoint."""

    host: str = Field("127.0.0.1", description="HTTP bind address of HAProxy and the replicas (loopback by "
                      "default; 0.0.0.0 on a multi-node cluster, where HAProxy forwards to other nodes).")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port of the endpoint.")
    app_name: str = Field("forge", min_length=1, description="Ray Serve application name.")
    model: str | None = Field(None, description="Registry model to serve (default: model.name).")
    replicas: ReplicasConfig = Field(default_factory=ReplicasConfig, description="Model replicas.")
    engine: ServeEngineConfig = Field(default_factory=ServeEngineConfig, description="vLLM engine settings.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API and admin keys.")
    swap: SwapConfig = Field(default_factory=SwapConfig, description="Hot swap of promoted versions.")
    chat_template: str | None = Field(
        None, description="Jinja chat template for /v1/chat/completions (None: the tokenizer's own, "
        "else a plain 'role: content' template)."
    )
    default_max_tokens: int = Field(16, ge=1, description="max_tokens when a request gives none (tokens).")
