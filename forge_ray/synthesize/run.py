"""The synthesize stage: restricted records -> checked synthetic samples -> a synthetic source.

    from forge_ray.synthesize import synthesize
    out = synthesize(config)          # {source: manifest}; the existing one when already complete

Plan (driver): open the dataset, read each restricted source, build its generator (templates and
teacher checked here: bad input fails before any generation). Scan (Ray Data): the prepare PII
scanner gives each record's spans and redacted form; a strategy that needs entities on a source
with none fails here. Generate and check (Ray Data): the generator, then every privacy check per
sample. Write (driver): kept samples packed into shards with the dataset's tokenizer, and the
manifest, in one atomic folder. Nothing is written unless every step before it succeeded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from forge_ray.config import ForgeConfig
from forge_ray.console import Progress
from forge_ray.prepare.dataset import open_dataset
from forge_ray.prepare.outputs import load_key
from forge_ray.prepare.run import data_context  # prepare's Ray Data settings: its packer writes the shards
from forge_ray.storage import Storage
from forge_ray.synthesize.output import read_manifest, set_current, synthesis_rel, write_synthetic
from forge_ray.synthesize.privacy import PrivacyIndex, distribution
from forge_ray.synthesize.records import SynthesizeError, as_record, read_restricted, scan_records
from forge_ray.synthesize.stages import check_stage, generate_stage
from forge_ray.synthesize.surrogate import Generator, SurrogateGenerator

log = logging.getLogger(__name__)


def code_version() -> str:
    from forge_ray import __version__

    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return f"{__version__}+{h.hexdigest()[:10]}"


def build_generator(config: ForgeConfig, source: str) -> Generator:
    """The strategy's generator, its inputs checked (templates' slots, the teacher's files)."""
    scfg = config.synthesize.sources[source]
    if scfg.strategy == "surrogate":
        return SurrogateGenerator(config.synthesize.date_shift_days)
    if scfg.strategy == "template":
        from forge_ray.synthesize.template import TemplateGenerator, load_templates

        return TemplateGenerator(load_templates(scfg.template, config.project.storage_root), scfg.template.values)
    from forge_ray.synthesize.teacher import TeacherGenerator

    return TeacherGenerator(scfg.teacher, config.project.storage_root)


def _canaries(config: ForgeConfig) -> list[str]:
    path = config.synthesize.privacy.canaries_file
    if not path:
        return []
    import fsspec

    uri = path.replace("{storage_root}", config.project.storage_root.rstrip("/"), 1)
    try:
        with fsspec.open(uri, "rt") as f:
            return [c["canary"] for c in json.load(f).get("canaries", [])]
    except (OSError, ValueError, KeyError) as e:
        raise SynthesizeError(f"synthesize.privacy.canaries_file {uri}: {e}") from None


def synthesize(config: ForgeConfig, storage: Storage | None = None, address: str | None = None,
               generators: dict[str, Generator] | None = None) -> dict[str, dict]:
    """Synthesise every source of `synthesize.sources`; {source: manifest}. `generators` replaces a
    source's strategy (tests inject a leaky one)."""
    cfg = config.synthesize
    if not cfg.sources:
        raise SynthesizeError("synthesize.sources is empty: name a restricted source and its strategy")
    storage = storage or Storage(config.project.storage_root)
    dataset = open_dataset(storage, config.prepare.dataset, cfg.dataset_version)
    canaries = _canaries(config)
    key = load_key(config.prepare.privacy, config.project.storage_root)
    plans = []
    for source in cfg.sources:  # every input checked before the cluster does any work
        records, lineage = read_restricted(dataset, source, key)
        if not records:
            raise SynthesizeError(f"source {source!r} has no restricted records in {dataset.path} "
                                  "(its PII policy routed none there)")
        gen = (generators or {}).get(source) or build_generator(config, source)
        plans.append((source, records, lineage, gen))
    from forge_ray.cluster import connect_for

    connect_for(config, address)
    out = {}
    with data_context():
        for source, records, lineage, gen in plans:
            out[source] = _one(config, dataset, source, records, lineage, gen, canaries)
    return out


def _identity(config: ForgeConfig, source: str, lineage: dict, gen: Generator) -> str:
    cfg = config.synthesize
    parts = {"source": json.loads(cfg.sources[source].model_dump_json()), "seed": cfg.seed,
             "samples": cfg.samples(source), "privacy": json.loads(cfg.privacy.model_dump_json()),
             "shift": cfg.date_shift_days, "inputs": lineage["sha256"], "code": code_version(),
             "generator": gen.describe(), "strategy": gen.strategy}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _one(config, dataset, source, records, lineage, gen: Generator, canaries) -> dict:
    import ray.data

    cfg = config.synthesize
    ident = _identity(config, source, lineage, gen)
    current = read_manifest(dataset, source)
    if current is not None and current.get("synthesis_id") == ident:
        log.info("synthetic %s is already complete (%s)", source, ident)
        return current
    done = read_manifest(dataset, source, ident)
    if done is not None:  # made before (e.g. a setting changed and changed back): current again
        set_current(dataset, source, ident)
        log.warning("synthetic %s: synthesis %s (these inputs, settings and code) is current again, in place of %s",
                    source, ident, current.get("synthesis_id") if current else "none")
        return done
    previous = current.get("synthesis_id") if current else None
    start = time.time()
    entities = config.prepare.pii.entities_of(source)
    blocks = max(1, min(len(records) // cfg.batch_size + 1, 64))
    scanned = ray.data.from_items(records, override_num_blocks=blocks).map_batches(
        scan_records, batch_size=cfg.batch_size, batch_format="numpy",
        fn_kwargs={"pii_cfg": config.prepare.pii, "entities": entities})
    rows = sorted(scanned.take_all(), key=lambda r: int(r["index"]))
    recs = [as_record(r) for r in rows]
    with_spans = sum(1 for r in recs if r.spans)
    if gen.strategy in ("surrogate", "teacher") and with_spans == 0:
        raise SynthesizeError(f"strategy {gen.strategy!r} works from detected entities, but the PII scanner finds "
                              f"none in the {len(recs)} restricted records of {source!r}")
    scan_s = time.time() - start
    scope = cfg.privacy.ngram_scope
    scope = ("identifiers" if gen.strategy == "surrogate" else "all") if scope == "auto" else scope
    index = PrivacyIndex.build(recs, cfg.privacy, scope, canaries)
    gen.real_values = frozenset(index.all_values)  # fakes equal to a real value are redrawn, not dropped later

    if hasattr(gen, "run"):  # a generator with its own Ray Data stages (the teacher's engine actors)
        samples = gen.run(recs, cfg.samples(source), cfg.seed, source, cfg.batch_size)
    else:
        samples = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            generate_stage, batch_size=cfg.batch_size, batch_format="numpy",
            fn_kwargs={"gen": gen, "samples": cfg.samples(source), "seed": cfg.seed, "source": source})
    checked = samples.map_batches(check_stage, batch_size=cfg.batch_size, batch_format="numpy",
                                  fn_kwargs={"index": index, "pii_cfg": config.prepare.pii, "entities": entities,
                                             "rescan": cfg.privacy.rescan})
    try:
        results = []
        # Synthetic records as they are generated and checked (each record makes `samples` of them).
        with Progress(f"synthesize {source}", len(rows) * cfg.samples(source), "records", interval_s=10) as bar:
            for r in checked.iter_rows():
                results.append(r)
                bar.update(len(results))
        results.sort(key=lambda r: (int(r["index"]), int(r["j"])))
    except Exception as e:  # a task's error (a teacher that did not load) as one message, nothing written
        cause = getattr(e, "cause", None) or e
        while cause.__cause__ is not None:  # Ray Data wraps the UDF's exception (UserCodeException)
            cause = cause.__cause__
        raise SynthesizeError(f"synthesis of {source!r} failed: {type(cause).__name__}: {cause}") from None
    errors = sorted({str(r["error"]) for r in results if r.get("error")})
    if errors:  # the generator failed inside its stage (a teacher that did not load): nothing written
        raise SynthesizeError(f"synthesis of {source!r} failed: {errors[0]}")
    gen_s = time.time() - start - scan_s

    kept = [str(r["text"]) for r in results if r["failed"] == "[]"]
    preview = _preview(recs, results)
    dropped, failures = {}, {}
    for r in results:
        failed = json.loads(r["failed"])
        if failed:
            dropped[failed[0]] = dropped.get(failed[0], 0) + 1
        for f in failed:
            failures[f] = failures.get(f, 0) + 1
    shared_all = [int(r["shared"]) for r in results]
    shared_kept = [int(r["shared"]) for r in results if r["failed"] == "[]"]
    manifest = {
        "synthesis_id": ident, "source": source, "strategy": gen.strategy, "seed": cfg.seed,
        "samples_per_record": cfg.samples(source), "generator": gen.describe(), "code_version": code_version(),
        "dataset": dataset.dataset, "dataset_version": dataset.version,
        "config": json.loads(cfg.model_dump_json(include={"seed", "samples_per_record", "date_shift_days", "privacy"})
                             ) | {"source": json.loads(cfg.sources[source].model_dump_json())},
        "lineage": {"restricted": lineage, "source_inputs": _source_inputs(dataset, source)},
        "counts": {"records": len(recs), "records_with_entities": with_spans, "samples": len(results),
                   "kept": len(kept), "dropped": dict(sorted(dropped.items())),
                   "check_failures": dict(sorted(failures.items()))},
        "privacy": {"ngram_tokens": cfg.privacy.ngram_tokens, "ngram_scope": scope, **index.stats(),
                    "max_shared_ngram_tokens_kept": max(shared_kept, default=0),
                    "max_shared_ngram_tokens_all": max(shared_all, default=0),
                    "distance_to_closest_restricted_kept": distribution(
                        [float(r["distance"]) for r in results if r["failed"] == "[]"])},
        "seconds": {"scan": round(scan_s, 2), "generate_and_check": round(gen_s, 2)},
    }
    if previous:  # a change in inputs, settings or code: a new synthesis, the previous one kept as it is
        manifest["previous_synthesis_id"] = previous
    manifest = write_synthetic(dataset, source, cfg.output_name(source), kept, manifest,
                               config.prepare.shard_sequences, preview)
    if previous:
        log.warning("synthetic %s: new synthesis %s replaces %s as the current one (inputs, settings or code "
                    "changed); %s stays at %s", source, ident, previous, previous,
                    dataset.storage.url(synthesis_rel(dataset, source, previous)))
    log.info("synthetic %s (%s): %d of %d samples kept, dropped %s", source, gen.strategy, len(kept),
             len(results), dropped or "none")
    return manifest


PREVIEW_PAIRS = 5


def _preview(recs, results, limit: int = PREVIEW_PAIRS) -> list[dict]:
    """The first kept samples (one per record) beside their record's redacted form: placeholders only,
    never a detected value (the report shows these)."""
    by_index = {r.index: r for r in recs}
    out = []
    for r in results:
        if r["failed"] == "[]" and int(r["j"]) == 0 and len(out) < limit:
            out.append({"record": int(r["index"]), "redacted": by_index[int(r["index"])].redacted,
                        "synthetic": str(r["text"])})
    return out


def _source_inputs(dataset, source: str) -> list[dict]:
    """The restricted source's input files as prepare's manifest records them (names, sizes, sha256)."""
    return [{k: f[k] for k in ("uri", "sha256", "bytes") if k in f}
            for f in dataset.manifest["sources"][source].get("inputs", []) if isinstance(f, dict)]
