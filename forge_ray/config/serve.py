"""`serve`: the OpenAI-compatible endpoint (Ray Serve + vLLM) and its hot swap of promoted versions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from forge_ray.cluster import HAPROXY_METRICS_PORT, HAPROXY_STATS_PORT
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
    num_gpus: float = Field(
        0.0, ge=0, description="GPUs each model replica reserves (0 on CPU nodes). With "
        "engine.tensor_parallel_size > 1 the replica needs that many GPUs (vLLM's workers run beside it)."
    )
    accelerator_type: str | None = Field(
        None, description="Ray accelerator type the replicas must land on (e.g. A10G); None: any."
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
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs one engine shards its model over (vLLM tensor parallelism; 1 on CPU)."
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Fraction of each GPU's memory one engine may take (GPU only). "
        "A surge swap runs two engines on the replica's GPUs, so swap.surge_on_gpu decides what happens."
    )
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
    retry_s: float = Field(
        5.0, gt=0, description="Seconds before a replica retries a swap that failed for a transient "
        "reason (drain timeout, no capacity for a surge engine, storage error); the version stays promotable."
    )
    surge_on_gpu: Literal["drain_first", "two_engines"] = Field(
        "drain_first", description="GPU replicas: 'drain_first' stops the old engine before the new one "
        "starts (a short pause, requests wait at the gate); 'two_engines' runs both, each with half of "
        "engine.gpu_memory_utilization."
    )


class LimitsConfig(Section):
    """Request limits, checked before anything is tokenised (a 4xx with an OpenAI error body)."""

    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body (bytes); more: 413.")
    max_json_depth: int = Field(32, ge=4, description="Deepest nesting of the JSON body (levels).")
    max_stop: int = Field(16, ge=0, description="Most stop strings (or stop token ids) per request.")
    max_stop_chars: int = Field(256, ge=1, description="Longest stop string (characters).")
    max_n: int = Field(8, ge=1, description="Largest `n` (choices per prompt).")
    max_prompts: int = Field(16, ge=1, description="Most prompts in one /v1/completions request (a batch).")
    max_messages: int = Field(256, ge=1, description="Most chat messages in one request.")
    max_tools: int = Field(64, ge=0, description="Most tool definitions in one chat request.")


class ApiConfig(Section):
    """vLLM's OpenAI serving layer inside each replica (the same options as vLLM's own server)."""

    tool_call_parser: str | None = Field(
        None, description="vLLM tool parser for `tools` (e.g. hermes, llama3_json); None: only named "
        "tool_choice with structured outputs works, 'auto' is a 400."
    )
    enable_auto_tool_choice: bool = Field(False, description="Allow tool_choice 'auto' (needs tool_call_parser).")
    reasoning_parser: str | None = Field(None, description="vLLM reasoning parser (e.g. deepseek_r1); None: off.")
    chat_template_content_format: Literal["auto", "string", "openai"] = Field(
        "auto", description="How message content reaches the chat template (vLLM's option)."
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
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Request limits.")
    api: ApiConfig = Field(default_factory=ApiConfig, description="vLLM's OpenAI serving options.")
    haproxy_stats_port: int = Field(
        HAPROXY_STATS_PORT, ge=1, le=65535, description="Port of HAProxy's stats page (Ray's RAY_SERVE_HAPROXY_STATS_PORT, set "
        "by forge_ray.cluster). Ray 2.60 binds it on every interface: keep it firewalled."
    )
    haproxy_metrics_port: int = Field(
        HAPROXY_METRICS_PORT, ge=1, le=65535, description="Port of HAProxy's Prometheus metrics (RAY_SERVE_HAPROXY_METRICS_PORT). "
        "Ray 2.60 binds it on every interface: keep it firewalled."
    )
    chat_template: str | None = Field(
        None, description="Jinja chat template for /v1/chat/completions (None: the tokenizer's own, "
        "else a plain 'role: content' template)."
    )
    default_max_tokens: int | None = Field(
        None, ge=1, description="max_tokens when a request gives none (tokens); None: as vLLM's server, "
        "the rest of the context.")

    @model_validator(mode="after")
    def _gpu_replicas(self) -> ServeConfig:
        tp, gpus = self.engine.tensor_parallel_size, self.replicas.num_gpus
        if tp > 1 and gpus < tp:
            raise ValueError(f"engine.tensor_parallel_size {tp} needs replicas.num_gpus >= {tp} (has {gpus})")
        return self
