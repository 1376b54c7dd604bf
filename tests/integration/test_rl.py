"""GRPO on a real local Ray cluster (docs/rl.md): a tiny SFT model, vLLM rollout engines as Ray actors,
the policy on Ray Train + DeepSpeed, weights synced in memory each step; a worker killed mid-run.

One run serves every assertion: its reward rises on the embedded verifiable task, it survives the
kill from its last checkpoint without skipping or repeating a step's prompts, the engines and the
trainer agree on log-probabilities, and the export goes through the held-out gate against its base.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from forge_ray.corpora.verifiable import verifiable_cases, write_cases

STEPS, KILL_AFTER, CHECKPOINT_EVERY = 30, 12, 5  # steps of 16 prompts x G = 8 (jobs/configs/rl.yaml)
PROMPTS = 64  # an epoch of prompts every 4 steps: the reward is compared on the same prompts


def _wait_for(predicate, what: str, outcome: dict, timeout: float = 600.0):
    deadline = time.monotonic() + timeout
    while not (got := predicate()):
        if outcome:
            raise RuntimeError(f"the run ended while waiting for {what}: {outcome.get('error')}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return got


@pytest.fixture(scope="module")
def grpo(sft_version, ray_cluster):
    from forge_ray.config.loader import load_config
    from forge_ray.rl.driver import train_and_gate
    from forge_ray.storage import Storage
    from forge_ray.train.metrics import read_all_metrics

    root = sft_version["ws"].root
    held_out = verifiable_cases(40, seed=1)
    write_cases(root / "rl" / "prompts.jsonl", verifiable_cases(PROMPTS, seed=2, exclude=held_out))
    write_cases(root / "rl" / "heldout.jsonl", held_out)
    config = load_config("jobs/configs/rl.yaml", [
        f"project.storage_root={root}", f"model.init_from={sft_version['exported'].path}",
        f"train.steps={STEPS}", f"train.checkpoint_every={CHECKPOINT_EVERY}", "train.run_name=grpo",
        # sampled at 1.5, the SFT model's completions score well below its greedy answers: room to learn that
        # does not depend on how good the session's SFT model came out (at 1.0 the first epoch already sits
        # within ~0.05 of greedy on some runs, and the curve is flat)
        "rl.kl_coef=0.02", "rl.temperature=1.5", "train.lr=1e-3"])
    run_dir = Storage(str(root)).path("runs", "grpo")
    outcome: dict = {}
    out: dict = {}

    def fit():
        try:
            out.update(train_and_gate(config))
        except BaseException as e:  # noqa: BLE001 - reported by the fixture
            outcome["error"] = repr(e)
        finally:
            outcome["done"] = True

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    before = _wait_for(lambda: [r for r in read_all_metrics(run_dir) if r["step"] >= KILL_AFTER],
                       f"step {KILL_AFTER}", outcome)
    os.kill(before[0]["pid"], signal.SIGKILL)
    killed = time.time()
    thread.join(timeout=900)
    assert not thread.is_alive(), "GRPO run did not finish"
    assert "error" not in outcome, outcome["error"]
    return {"config": config, "killed": killed, "records": read_all_metrics(run_dir), **out}


def test_reward_rises_over_the_run(grpo):
    curve = {r["step"]: r for r in grpo["records"]}
    steps = sorted(curve)
    assert steps == list(range(STEPS))
    span = PROMPTS // 16  # steps per epoch (16 prompts a step): each epoch asks every prompt once
    epochs = [[curve[s]["reward_by_term"]["kpi"] for s in steps[i: i + span]] for i in range(0, STEPS - span + 1, span)]
    first, last = sum(epochs[0]) / len(epochs[0]), sum(epochs[-1] + epochs[-2]) / (2 * len(epochs[-1]))
    # measured (no kill): 0.23 in the first epoch, 0.43 over the last two
    assert last > first + 0.08, [round(sum(e) / len(e), 3) for e in epochs]


def test_a_killed_worker_is_survived_from_its_last_checkpoint(grpo):
    recs = grpo["records"]
    after = [r for r in recs if r["time"] > grpo["killed"]]
    resumed = after[0]["start_step"]
    assert resumed > 0 and resumed % CHECKPOINT_EVERY == 0  # restarted from a checkpoint, not from 0
    assert after[0]["step"] == resumed and after[0]["pid"] != recs[0]["pid"]
    # steps redone after the restart train on the same prompts, which `PromptOrder` makes a function of the step
    assert max(r["step"] for r in recs) == STEPS - 1
    assert grpo["result"].metrics[-1]["step"] == STEPS - 1


def test_engines_and_trainer_agree_and_sync_in_memory(grpo):
    recs = grpo["records"]
    assert all(r["logprob_gap"] < 0.02 for r in recs), [round(r["logprob_gap"], 4) for r in recs]
    assert all(0 < r["sync_s"] < r["step_time_s"] for r in recs)
    assert all(r["reward_failed"] == 0 for r in recs)
    assert recs[-1]["kl"] > 0  # rl.kl_coef > 0: the policy moved away from its frozen reference, measured


def test_rollout_engine_serves_the_synced_weights(grpo, tmp_path):
    """An engine started on the base and synced with the RL version's weights generates greedily
    what `transformers` generates from the exported RL version."""
    import ray
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forge_ray.rl.rollout import RolloutPool

    rl_dir, base = grpo["exported"].path, grpo["config"].model.init_from
    tok = AutoTokenizer.from_pretrained(rl_dir)
    prompts = [tok(t)["input_ids"] for t in ("In which language is this ticket", "def main():", "Hello")]
    pool = RolloutPool.start(base, grpo["config"].rl)
    try:
        pool.sync(load_file(os.path.join(rl_dir, "model.safetensors")), step=1)
        got = ray.get(pool.actors[0].greedy.remote(prompts, 12))
    finally:
        pool.shutdown()
    model = AutoModelForCausalLM.from_pretrained(rl_dir, dtype=torch.float32).eval()
    for ids, tokens in zip(prompts, got, strict=True):
        seq = list(ids)
        with torch.no_grad():  # plain argmax decoding: EOS is a token like any other, as with ignore_eos
            for _ in range(12):
                seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
        assert tokens == seq[len(ids):]


def test_export_is_gated_on_the_held_out_suite_against_its_base(grpo):
    gate = grpo["gate"]
    assert gate["cases"] == 40 and 0 <= gate["base"] <= 1 and 0 <= gate["rl"] <= 1
    assert gate["decision"] == ("promote" if gate["delta"] >= 0 else "reject")
    manifest = grpo["exported"].manifest
    assert manifest["lineage"]["objective"] == "grpo" and manifest["lineage"]["prompts_sha256"]
    assert manifest["lineage"]["base"] == grpo["config"].model.init_from
