"""GRPO's arithmetic: group advantages, the clipped loss, its aggregation over a step's micro
batches, and the batch layout the trainer builds from completions."""

from __future__ import annotations

import math

import pytest
import torch

from forge_ray.rl.grpo import group_advantages, policy_loss, step_norm, token_logprobs
from forge_ray.rl.worker import RolloutBatch, completion_masks, micro_batch


def test_advantages_are_normalised_within_each_group():
    adv, valid = group_advantages([1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5], group_size=4)
    first = adv[:4]
    assert first[0] > 0 and (first[1:] < 0).all()
    assert abs(float(first.sum())) < 1e-5
    std = torch.tensor([1.0, 0.0, 0.0, 0.0]).std()
    assert math.isclose(float(first[0]), 0.75 / (float(std) + 1e-4), rel_tol=1e-5)
    assert torch.equal(adv[4:], torch.zeros(4))  # equal rewards: nothing to learn from that group
    assert valid.all()


def test_unscaled_advantages_are_only_centred():
    adv, _ = group_advantages([2.0, 0.0], group_size=2, scale=False)
    assert adv.tolist() == [1.0, -1.0]


def test_a_failed_reward_leaves_its_completion_out_of_the_group():
    adv, valid = group_advantages([1.0, None, 0.0, 0.0], group_size=4, scale=False)
    assert valid.tolist() == [True, False, True, True]
    assert adv[1] == 0
    assert math.isclose(float(adv[0]), 1 - 1 / 3, rel_tol=1e-6)  # the mean of the three that scored


def test_rewards_must_be_whole_groups():
    with pytest.raises(ValueError, match="whole groups of 4"):
        group_advantages([1.0] * 6, group_size=4)


def test_token_logprobs_match_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    lp = token_logprobs(logits, ids, temperature=2.0)
    want = torch.log_softmax(logits[:, :-1] / 2.0, -1).gather(-1, ids[:, 1:, None])[..., 0]
    assert torch.allclose(lp, want, atol=1e-6)


def _loss(logp, old, adv, mask, **kw):
    args = dict(clip_eps=0.2, kl_coef=0.0, aggregation="token", norm=float(mask.sum()))
    return policy_loss(logp, old, adv, mask, **{**args, **kw})


def test_on_policy_gradient_pushes_up_tokens_with_positive_advantage():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    parts = _loss(logp, logp.detach(), torch.tensor([1.0]), torch.ones(1, 2))
    parts.loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.5, -0.5]]))  # d(-r A)/dlogp = -A / tokens
    assert float(parts.sums[1]) == 0  # nothing clipped at ratio 1


def test_the_ratio_is_clipped_once_the_policy_moved_past_eps():
    old = torch.tensor([[-1.0, -1.0]])
    logp = (old + torch.tensor([[0.5, 0.0]])).requires_grad_()  # ratio e^0.5 = 1.65 on the first token
    parts = _loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2))
    parts.loss.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] != 0  # the clipped token gets no gradient
    assert float(parts.sums[1]) == 1


def test_kl_penalty_is_zero_at_the_reference_and_positive_away_from_it():
    logp = torch.tensor([[-1.0, -2.0]])
    at_ref = _loss(logp, logp, torch.tensor([0.0]), torch.ones(1, 2), kl_coef=0.1, ref_logp_BT=logp)
    away = _loss(logp, logp, torch.tensor([0.0]), torch.ones(1, 2), kl_coef=0.1, ref_logp_BT=logp - 0.5)
    assert float(at_ref.loss) == 0 and float(away.loss) > 0 and float(away.sums[2]) > 0


@pytest.mark.parametrize("aggregation", ["token", "sequence", "fixed"])
def test_micro_batches_sum_to_the_whole_steps_loss(aggregation):
    """Splitting a step into micro batches (each divided by the step-wide norm) gives the same loss
    as the whole batch at once, for every aggregation."""
    torch.manual_seed(1)
    logp = torch.randn(4, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0]]).float()
    adv = torch.tensor([1.0, -1.0, 0.5, 2.0])
    norm = step_norm([mask[:2], mask[2:]], aggregation, max_new_tokens=6)
    kw = dict(clip_eps=0.2, kl_coef=0.0, aggregation=aggregation, norm=norm)
    whole = policy_loss(logp, logp - 0.1, adv, mask, **kw).loss
    parts = sum(policy_loss(logp[s], logp[s] - 0.1, adv[s], mask[s], **kw).loss for s in (slice(0, 2), slice(2, 4)))
    assert torch.allclose(whole, parts)
    if aggregation == "sequence":  # every completion counts once whatever its length
        per_seq = [(-(torch.exp(torch.tensor(0.1)).clamp(max=1.2)) * a).item() for a in adv]
        assert math.isclose(float(whole), sum(per_seq) / 4, rel_tol=1e-5)


def test_micro_batch_masks_exactly_the_completion_tokens():
    batch = RolloutBatch(prompts=[[5, 6, 7], [5, 6]], completions=[[8, 9], [10, 11, 12]],
                         rollout_logprobs=[[-0.1, -0.2], [-0.3, -0.4, -0.5]], advantages=[1.0, -1.0],
                         valid=[True, True])
    m = micro_batch(batch, [0, 1], pad_id=0)
    assert m["input_ids"].tolist() == [[5, 6, 7, 8, 9], [5, 6, 10, 11, 12]]
    # position p predicts token p + 1: the completion's tokens are the targets of positions L-1 ..
    assert m["mask"].tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]
    assert m["rollout_logp"][1].tolist() == pytest.approx([0, -0.3, -0.4, -0.5])
    assert m["position_ids"].tolist() == [[0, 1, 2, 3, 4]] * 2


def test_a_completion_without_reward_is_not_a_target():
    batch = RolloutBatch(prompts=[[1, 2], [1, 2]], completions=[[3], [4, 5]], rollout_logprobs=[[-1.0], [-1.0, -1.0]],
                         advantages=[0.0, 0.0], valid=[True, False])
    assert micro_batch(batch, [0, 1], pad_id=0)["mask"].sum() == 1
    assert step_norm(completion_masks(batch), "token", 8) == 1


def test_an_export_whose_tokenizer_is_its_bases_folder_keeps_its_own_weights(tmp_path):
    """GRPO ships its base's tokenizer from the base's model folder: the base's weights and
    manifest must not come along and overwrite the trained ones."""
    from safetensors.torch import load_file

    from forge_ray.config.model import ModelConfig
    from forge_ray.models import build_model
    from forge_ray.models.hf import save_hf_folder
    from forge_ray.testing.tiny_versions import build_tiny

    base = build_tiny(str(tmp_path / "base"), seed=1)
    (tmp_path / "base" / "manifest.json").write_text("{}")
    cfg = ModelConfig(name="t", hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, ffn_hidden_size=256,
                      vocab_size=512, max_seq_len=512)
    state = build_model(cfg, seed=7).state_dict()
    out = save_hf_folder(state, cfg, tmp_path / "out", tokenizer_dir=base, eos=2)
    saved = load_file(str(out / "model.safetensors"))
    assert torch.equal(saved["model.embed_tokens.weight"], state["embed_tokens.weight"])
    assert (out / "tokenizer.json").exists() and not (out / "manifest.json").exists()


class _FakePool:
    """Stands in for the rollout engines (RolloutPool's methods): one engine that Ray restarted with
    its starting weights (step 0) and answers every prompt with the same completions."""

    def __init__(self, completion: list[int], group_size: int):
        from forge_ray.rl.rollout import Completion

        self.held, self.syncs, self.calls = 0, [], 0
        self.group = [Completion(completion, [-0.5] * len(completion), "stop")] * group_size

    def generate(self, prompts):
        self.calls += 1
        return [list(self.group) for _ in prompts], [self.held] * len(prompts)

    def behind(self, step):
        return [0] if self.held != step else []

    def sync(self, weights, step, only=None):
        self.held = step
        self.syncs.append((step, only, sorted(weights)[:1]))
        return 0.01


def test_a_restarted_rollout_engine_is_synced_before_its_completions_are_used(tmp_path):
    from types import SimpleNamespace

    from forge_ray.config.model import ModelConfig
    from forge_ray.config.rl import RLConfig
    from forge_ray.config.train import TrainConfig
    from forge_ray.models import build_model
    from forge_ray.rl.prompts import parse_cases
    from forge_ray.rl.worker import GRPOJob, GRPOTrainer
    from forge_ray.testing.tiny_versions import build_tiny

    folder = build_tiny(str(tmp_path / "base"))
    cfg = ModelConfig(name="t", hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, ffn_hidden_size=256,
                      vocab_size=512, max_seq_len=512)
    cases = parse_cases([{"id": f"c{i}", "prompt": f"q{i}", "scorer": "exact", "expected": "yes"} for i in range(4)], "p")
    rl = RLConfig(prompts="p.jsonl", group_size=2)
    pool = _FakePool([7, 8], rl.group_size)
    job = GRPOJob(model=cfg, train=TrainConfig(global_batch_size=4, micro_batch_size=4), rl=rl,
                  run_dir=str(tmp_path / "run"), init_from=folder, tokenizer_dir=folder, cases=cases,
                  prompt_ids=[[1, 2]] * 4, pool=pool, pad_id=0, run_id="r", config_hash="h")
    trainer = GRPOTrainer(job, SimpleNamespace(device="cpu"), None, build_model(cfg), None, rank=0, world_size=1,
                          start_step=3)
    batch = trainer.rollouts(3)
    assert pool.syncs[0][:2] == (3, [0]) and pool.syncs[0][2] == ["lm_head.weight"]  # HF names, step 3's weights
    assert pool.calls == 2  # the completions made with the starting weights were thrown away
    assert len(batch.completions) == 4 and batch.valid == [True] * 4
    assert batch.advantages == [0.0] * 4  # equal rewards in each group
