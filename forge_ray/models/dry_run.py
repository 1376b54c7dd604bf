"""Size a model without building it: parameters, FLOPs per token, memory per training worker.

Used by `forge train -c FILE --dry-run` (and the train benchmark) for configs too large for this
machine (7B dense, 8x7B MoE). Counts follow the module definitions in `forge_ray.models`:
a test checks them against a built tiny model, parameter for parameter.

FLOPs per trained token = 6 x (matmul parameters a token passes through) + 12 x L x D x T
(attention scores and values), the usual estimate (Kaplan et al. / PaLM appendix B).
Activation memory: ~ L x B x T x D x (34 + 5 H T / D) bytes at 16 bits without recomputation
(Korthikanti et al. 2022); doubled for fp32. With activation checkpointing (every block recomputed
in the backward pass) only each block's input stays, 2 x L x B x T x D bytes, plus one block's
full activations while it is recomputed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from forge_ray.config.model import ModelConfig

GIB = 1 << 30


@dataclass
class ModelSize:
    params_total: int  # every parameter (experts counted once each)
    params_active: int  # parameters one token uses (top-k experts of E)
    params_embedding: int
    flops_per_token: float  # training (forward + backward) FLOPs per token at seq_len
    seq_len: int

    def to_dict(self) -> dict:
        return asdict(self)


def _per_layer(cfg: ModelConfig) -> tuple[int, int, int]:
    """(attention + norms, dense MLP, one MoE layer's experts + router) parameters."""
    D, E = cfg.hidden_size, cfg.head_dim
    attn = D * cfg.num_heads * E * 2 + D * cfg.num_kv_heads * E * 2 + 2 * D
    attn += (cfg.num_heads + 2 * cfg.num_kv_heads) * E if cfg.attention_bias else 0
    attn += 2 * E if cfg.qk_norm else 0
    mlp = 3 * D * cfg.ffn_hidden_size
    moe = cfg.moe.num_experts * mlp + D * cfg.moe.num_experts
    return attn, mlp, moe


def model_size(cfg: ModelConfig, seq_len: int) -> ModelSize:
    if cfg.vocab_size is None:
        raise ValueError("model.vocab_size must be set for a dry run")
    attn, mlp, moe = _per_layer(cfg)
    n_moe = sum(cfg.is_moe_layer(i) for i in range(cfg.num_layers))
    n_dense = cfg.num_layers - n_moe
    embed = cfg.vocab_size * cfg.hidden_size
    head = 0 if cfg.tie_embeddings else embed
    total = embed + head + cfg.hidden_size + cfg.num_layers * attn + n_dense * mlp + n_moe * moe
    active_moe = cfg.moe.top_k * mlp + cfg.hidden_size * cfg.moe.num_experts
    active = embed + head + cfg.hidden_size + cfg.num_layers * attn + n_dense * mlp + n_moe * active_moe
    matmul = active - embed + (embed if cfg.tie_embeddings else 0)  # the lookup is no matmul; lm_head is
    flops = 6.0 * matmul + 12.0 * cfg.num_layers * cfg.hidden_size * seq_len
    return ModelSize(total, active, embed, flops, seq_len)


def memory_per_worker(
    cfg: ModelConfig,
    *,
    seq_len: int,
    micro_batch_size: int,
    world_size: int,
    zero_stage: int,
    bf16: bool,
    activation_checkpointing: bool = False,
) -> dict[str, float]:
    """Estimated training memory of one worker in GiB: weights, gradients, optimizer, activations.

    Mixed precision keeps 16-bit weights and gradients plus fp32 master weights and two Adam
    moments; ZeRO 1 partitions master weights and moments over the data-parallel ranks, ZeRO 2
    gradients as well. Expert weights are spread over `expert_parallel_size` ranks first, then
    partitioned over the remaining (expert data-parallel) ranks.
    """
    _, mlp, _ = _per_layer(cfg)
    n_moe = sum(cfg.is_moe_layer(i) for i in range(cfg.num_layers))
    expert = n_moe * cfg.moe.num_experts * mlp if cfg.family == "moe" else 0
    ep = cfg.moe.expert_parallel_size if cfg.family == "moe" else 1
    dense = model_size(cfg, seq_len).params_total - expert
    local_expert = expert / ep
    w_bytes = 2 if bf16 else 4
    dp_dense, dp_expert = world_size, max(1, world_size // ep)

    def part(n: float, dp: int, on: bool) -> float:
        return n / dp if on else n

    weights = (dense + local_expert) * w_bytes
    grads = (part(dense, dp_dense, zero_stage >= 2) + part(local_expert, dp_expert, zero_stage >= 2)) * w_bytes
    opt_per_param = (12 if bf16 else 8)  # (fp32 master +) exp_avg + exp_avg_sq
    optimizer = (part(dense, dp_dense, zero_stage >= 1) + part(local_expert, dp_expert, zero_stage >= 1)) * opt_per_param
    H = cfg.num_heads
    per_layer = micro_batch_size * seq_len * cfg.hidden_size * (34 + 5 * H * seq_len / cfg.hidden_size)
    if activation_checkpointing:
        act = cfg.num_layers * micro_batch_size * seq_len * cfg.hidden_size * 2 + per_layer
    else:
        act = cfg.num_layers * per_layer
    act *= 1 if bf16 else 2
    logits = micro_batch_size * seq_len * cfg.vocab_size * 4 * 2  # fp32 logits and their gradient
    out = {"weights": weights, "gradients": grads, "optimizer": optimizer, "activations": act + logits}
    out = {k: v / GIB for k, v in out.items()}
    out["total"] = sum(out.values())
    return out


def dry_run(cfg: ModelConfig, train, seq_len: int, world_size: int | None = None) -> dict:
    """The figures `forge train --dry-run` prints, for the largest world size of the run."""
    w = world_size or train.max_workers
    size = model_size(cfg, seq_len)
    bf16 = train.precision == "bf16" or (train.precision == "auto" and train.use_gpu)
    def mem_at(ckpt: bool) -> dict[str, float]:
        return memory_per_worker(cfg, seq_len=seq_len, micro_batch_size=train.micro_batch_size, world_size=w,
                                 zero_stage=train.zero_stage, bf16=bf16, activation_checkpointing=ckpt)

    ckpt = bool(getattr(train, "activation_checkpointing", False))
    mem = mem_at(ckpt)
    return {
        "family": cfg.family,
        "params_total": size.params_total,
        "params_active": size.params_active,
        "params_embedding": size.params_embedding,
        "flops_per_token": size.flops_per_token,
        "seq_len": seq_len,
        "world_size": w,
        "zero_stage": train.zero_stage,
        "precision": "bf16" if bf16 else "fp32",
        "activation_checkpointing": ckpt,
        "memory_gib_per_worker": {k: round(v, 3) for k, v in mem.items()},
        # both ways, whichever the run uses: what the switch `train.activation_checkpointing` buys
        "memory_gib_total_by_activation_checkpointing": {
            "off": round(mem_at(False)["total"], 3), "on": round(mem_at(True)["total"], 3)},
    }


def format_dry_run(d: dict) -> str:
    m = d["memory_gib_per_worker"]
    return (
        f"{d['family']} model: {d['params_total'] / 1e6:,.1f} M parameters "
        f"({d['params_active'] / 1e6:,.1f} M active per token, {d['params_embedding'] / 1e6:,.1f} M embedding)\n"
        f"training FLOPs per token: {d['flops_per_token'] / 1e9:,.2f} GFLOP at seq_len {d['seq_len']}\n"
        f"memory per worker ({d['world_size']} workers, ZeRO {d['zero_stage']}, {d['precision']}): "
        f"{m['total']:,.2f} GiB = weights {m['weights']:,.2f} + gradients {m['gradients']:,.2f} + "
        f"optimizer {m['optimizer']:,.2f} + activations {m['activations']:,.2f}"
        + (f"\nwith / without activation checkpointing: {by['on']:,.2f} / {by['off']:,.2f} GiB per worker"
           if (by := d.get("memory_gib_total_by_activation_checkpointing")) else "")
    )
