"""`rl`: reinforcement learning on the organisation's KPIs with GRPO (`train.objective: grpo`, docs/rl.md).

    train: {objective: grpo, steps: 40, global_batch_size: 32, micro_batch_size: 8}   # 32 completions / step
    model: {init_from: <an SFT version's folder>}
    rl:
      prompts: "{storage_root}/rl/prompts.jsonl"     # KPI cases: prompt or messages + a scorer
      eval_suite: kpi/held_out.yaml                  # the gate's held-out suite (never the prompts)
      group_size: 4                                   # G completions per prompt -> 8 prompts per step
      rewards: [{kind: kpi, weight: 1.0}, {kind: format, pattern: "^\\S.*$", weight: 0.1}]

A step: `global_batch_size / group_size` prompts, G sampled completions each on the rollout
engines (vLLM), rewards, group-normalised advantages, one clipped policy-gradient update of the
policy on Ray Train + DeepSpeed, then the new weights pushed to the engines in memory.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from forge_ray.config.base import Section, check_regex


class RewardConfig(Section):
    """One term of the reward: a weighted sum of these scores each completion."""

    kind: Literal["kpi", "format", "function"] = Field(
        description="'kpi': the prompt case's own scorer (exact, contains, regex, numeric, json_schema), 1 or 0; "
        "'format': 1 when the whole completion matches `pattern`; 'function': `function(completion, case)`.")
    weight: float = Field(1.0, description="Weight of this term in the summed reward (dimensionless).")
    pattern: str | None = Field(None, description="kind format: a Python regex the stripped completion must "
                                "fully match (re.fullmatch, DOTALL).")
    function: str | None = Field(
        None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="kind function: 'package.module:name' of a callable (completion: str, case: dict) -> float.")

    @model_validator(mode="after")
    def _fields_of_kind(self) -> RewardConfig:
        if self.kind == "format":
            if not self.pattern:
                raise ValueError("a reward of kind 'format' needs `pattern`")
            check_regex(self.pattern)
        if self.kind == "function" and not self.function:
            raise ValueError("a reward of kind 'function' needs `function: package.module:name`")
        return self


class RLConfig(Section):
    """GRPO: prompts, rollouts on vLLM engines, rewards, the policy loss."""

    prompts: str = Field(description="Training prompts: a KPI suite file (.yaml/.json) or .jsonl of cases "
                         "(each with `prompt` or `messages` and a scorer); path or URI; {storage_root} expands.")
    eval_suite: str | None = Field(
        None, description="The held-out KPI suite the gate scores the RL version and its base on; a case whose "
        "prompt is also a training prompt is refused.")
    group_size: int = Field(4, ge=2, description="G: completions sampled per prompt (count); "
                            "train.global_batch_size / G prompts per step.")
    max_new_tokens: int = Field(16, ge=1, description="Longest completion (tokens).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts (and of the "
                               "policy's log-probabilities in the loss).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling of the rollouts (probability mass).")
    clip_eps: float = Field(0.2, gt=0, lt=1, description="PPO-style clip of the importance ratio to "
                            "[1 - eps, 1 + eps] (ratio).")
    kl_coef: float = Field(0.0, ge=0, description="Weight of the KL penalty to the frozen starting policy "
                           "(k3 estimator); 0: no reference model is kept.")
    loss_aggregation: Literal["token", "sequence", "fixed"] = Field(
        "token", description="'token': mean over every completion token of the batch (DAPO); 'sequence': mean "
        "per completion, then over completions (the GRPO paper); 'fixed': sum over tokens / (completions x "
        "max_new_tokens) (Dr. GRPO, no length bias).")
    scale_rewards: bool = Field(True, description="Divide each group's advantages by its reward std "
                                "(the GRPO paper); off: only centre them (Dr. GRPO).")
    updates_per_batch: int = Field(1, ge=1, description="Optimizer steps on each rollout batch (count); "
                                   "above 1 the clipped ratio departs from 1.")
    rewards: list[RewardConfig] = Field(default_factory=lambda: [RewardConfig(kind="kpi")], min_length=1,
                                        description="The reward: a weighted sum of these terms.")
    engines: int = Field(1, ge=1, description="Rollout engines (vLLM, one Ray actor each) (count).")
    engine_cpus: float = Field(1.0, gt=0, description="Logical CPUs each rollout engine reserves (count).")
    engine_gpus: float = Field(0.0, ge=0, description="GPUs each rollout engine reserves (count).")
    kv_cache_gib: float = Field(0.5, gt=0, description="KV cache of each engine on CPU (GiB).")
    max_model_len: int = Field(512, ge=16, description="Context of the rollout engines (tokens): "
                               "the longest prompt + max_new_tokens must fit.")
    seed: int = Field(0, description="Seed of the prompt order and of the sampling (step k reseeds with (seed, k)).")


def rl_problems(config) -> list[str]:
    """Cross-section rules of a GRPO run (called by the forge file's validator)."""
    t, rl = config.train, config.rl
    if t.objective != "grpo":
        return []
    problems = []
    if rl is None:
        return ["train.objective 'grpo' needs an `rl` section (at least rl.prompts; docs/rl.md)"]
    if not config.model.init_from:
        problems.append("train.objective 'grpo' starts from a model: set model.init_from to an SFT version's "
                        "folder (a registry version path or an HF folder)")
    if config.model.family == "moe":
        problems.append("train.objective 'grpo' needs a dense policy: vLLM's in-place weight load is not exact "
                        "for MoE layers on CPU (docs/rl.md)")
    if t.global_batch_size % rl.group_size:
        problems.append(f"train.global_batch_size ({t.global_batch_size}) must be a multiple of rl.group_size "
                        f"({rl.group_size}): each step trains on whole groups of completions")
    if rl.max_new_tokens >= rl.max_model_len:
        problems.append(f"rl.max_new_tokens ({rl.max_new_tokens}) must be below rl.max_model_len "
                        f"({rl.max_model_len}), which must also hold the prompt")
    return problems
