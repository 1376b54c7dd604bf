"""Synthetic-data benchmark: throughput per strategy and the privacy figures of what is kept.

    .venv/bin/python benchmarks/synthetic.py [--quick]

The embedded corpora (scale 0.05 with --quick, else 0.25) with `tickets` made restricted are
prepared once on a local Ray cluster; then each strategy turns the restricted tickets into a
synthetic source (the same dataset version; the previous synthetic folder is removed between
strategies): `surrogate`, `template` (three templates) and `teacher` (a tiny random-weight model on
vLLM: its output is noise, so its figures measure the plumbing and the checks, not quality).

Per strategy: synthetic samples per second (wall time of `synthesize`, scan and checks included,
2 cores), counts per outcome and drop reason, `planted_values_in_output` (planted personal values
of the corpus, the ground truth, found in kept samples: goal 0), canaries in kept samples (goal 0)
and `max_shared_ngram_tokens` (goal < 13).

`utility_recovery` = (ppl_a - ppl_c) / (ppl_a - ppl_b) (three tiny models trained on public only,
public + real restricted, public + synthetic) is not measured yet: it is reported as null.

Writes benchmarks/results/synthetic.json; the last line printed is utility_recovery.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import yaml

import forge_ray  # noqa: F401  (offline environment)

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "synthetic.json"
TEMPLATES = [
    "Hello support, this is {PERSON:c}. Our {PRODUCT} stopped working after the last update. "
    "Please call me on {PHONE} or write to {EMAIL}. Regards, {PERSON:c}",
    "Dear team, the invoice for {PRODUCT} was charged twice to card {CREDIT_CARD}. Please refund it to "
    "{IBAN}. Thank you, {PERSON:c}",
    "Hi, {PERSON:c} here. Please send the replacement {PRODUCT} to {ADDRESS}. My phone: {PHONE}.",
]


def _config(root: Path, source_cfg: dict):
    from forge_ray.config import load_config

    raw = yaml.safe_load((REPO / "jobs" / "configs" / "demo.yaml").read_text())
    raw["project"]["storage_root"] = str(root)
    for s in raw["data"]["sources"]:
        if s["name"] == "tickets":
            s["sensitivity"] = "restricted"
    raw["prepare"]["seq_len"] = 128
    raw["prepare"]["tokenizer"]["vocab_size"] = 1024
    raw["mixture"].update(weights={}, max_epochs={})
    raw["synthesize"]["sources"] = {"tickets": source_cfg}
    path = root.parent / "forge.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


def _run(root: Path, name: str, source_cfg: dict, planted: dict) -> dict:
    from forge_ray.prepare.dataset import open_dataset
    from forge_ray.storage import Storage
    from forge_ray.synthesize import read_samples, synthesize
    from forge_ray.synthesize.output import synthetic_rel

    config = _config(root, source_cfg)
    storage = Storage(str(root))
    ds = open_dataset(storage, config.prepare.dataset)
    if storage.exists(synthetic_rel(ds, "tickets")):
        storage.fs.rm(storage.path(synthetic_rel(ds, "tickets")), recursive=True)
    start = time.time()
    m = synthesize(config)["tickets"]
    seconds = time.time() - start
    kept = "\n".join(read_samples(ds, "tickets", limit=1 << 30))
    leaked = sorted({v["kind"] for v in planted["values"] if v["value"] in kept})
    out = {
        "seconds": round(seconds, 2), "samples": m["counts"]["samples"], "kept": m["counts"]["kept"],
        "samples_per_s": round(m["counts"]["samples"] / seconds, 2), "dropped": m["counts"]["dropped"],
        "check_failures": m["counts"]["check_failures"],
        "planted_values_in_output": sum(v["value"] in kept for v in planted["values"]),
        "planted_kinds_in_output": leaked,
        "canaries_in_output": sum(c["canary"] in kept for c in planted["canaries"]),
        "max_shared_ngram_tokens": m["privacy"]["max_shared_ngram_tokens_kept"],
        "ngram_scope": m["privacy"]["ngram_scope"],
        "distance_to_closest_restricted": m["privacy"]["distance_to_closest_restricted_kept"],
        "phase_seconds": m["seconds"],
    }
    print(f"{name:>10}: {out['samples']} samples in {seconds:.1f} s ({out['samples_per_s']}/s), kept {out['kept']}, "
          f"dropped {out['dropped']}, planted values in output {out['planted_values_in_output']}, "
          f"canaries {out['canaries_in_output']}, max shared run {out['max_shared_ngram_tokens']} tokens")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small corpus (CI smoke run)")
    args = parser.parse_args()
    from forge_ray.cluster import connect
    from forge_ray.corpora import write_corpora
    from forge_ray.prepare.run import prepare_dataset
    from forge_ray.storage import Storage
    from forge_ray.testing.tiny_versions import publish_tiny

    scale = 0.05 if args.quick else 0.25
    connect(num_cpus=8, object_store_mb=1024)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        write_corpora(Storage(str(root)), scale=scale)
        t = time.time()
        ds = prepare_dataset(_config(root, {"strategy": "surrogate"}))
        prepare_s = time.time() - t
        restricted = ds.manifest["sources"]["tickets"]["counts"]["dropped"].get("routed_restricted", 0)
        planted = json.loads((root / "corpora" / "tickets.planted.json").read_text())
        publish_tiny(Storage(str(root)), "teacher", "v1", family="dense", seed=1)
        strategies = {
            "surrogate": {"strategy": "surrogate"},
            "template": {"strategy": "template", "template": {"templates": TEMPLATES,
                                                              "values": {"PRODUCT": ["K2 logger", "TX-9 camera"]}}},
            "teacher": {"strategy": "teacher", "teacher": {"model": "teacher", "version": "v1", "max_tokens": 48,
                                                           "max_model_len": 384, "batch_size": 32}},
        }
        results = {name: _run(root, name, cfg, planted) for name, cfg in strategies.items()}
        shutil.rmtree(root, ignore_errors=True)
    report = {
        "quick": args.quick, "scale": scale, "restricted_records": restricted, "prepare_seconds": round(prepare_s, 1),
        "strategies": results,
        "planted_values_in_output": {k: v["planted_values_in_output"] for k, v in results.items()},
        "max_shared_ngram_tokens": {k: v["max_shared_ngram_tokens"] for k, v in results.items()},
        "utility_recovery": None,
        "utility_recovery_note": "not measured yet (three tiny training runs: public only, + real restricted, "
                                 "+ synthetic); see docs/synthesize.md",
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"utility_recovery (surrogate): {report['utility_recovery']} (not measured)")


if __name__ == "__main__":
    main()
