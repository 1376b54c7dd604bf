"""`synthesize`: restricted records -> a privacy-checked synthetic source (docs/synthesize.md).

Each restricted source names a strategy: `surrogate` (every detected entity replaced by a consistent
fake of the same type and format), `teacher` (a model on vLLM writes new records from each record's
redacted form) or `template` (the organisation's templates, typed slots filled by fake providers).
Every synthetic record passes the privacy checks (`privacy`) before it is kept.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from forge_ray.config.base import Section
from forge_ray.config.data import SOURCE_NAME_PATTERN

Strategy = Literal["surrogate", "teacher", "template"]
# A template slot: {TYPE} or {TYPE:key}; the same key in one sample gets the same value.
SLOT = re.compile(r"\{([A-Z][A-Z0-9_]*)(?::([a-z0-9_]+))?\}")

DEFAULT_PROMPT = (
    "Below are support records with personal data replaced by placeholders such as <PERSON>.\n"
    "{examples}Write one new, different record of the same kind. Keep placeholders as they are.\n\n"
    "Record:\n{redacted}\n\nNew record:\n"
)


class TeacherConfig(Section):
    """The teacher model and how it samples (vLLM offline engine in Ray actors, Ray Data batches)."""

    model: str | None = Field(None, description="Registry model name: the teacher is one of its versions.")
    version: str = Field("promoted", description="Registry version id, or 'promoted' (the promoted one).")
    path: str | None = Field(None, description="Or an open-weights folder (Hugging Face layout, local path or "
                             "fsspec URI), instead of a registry version.")
    prompt: str = Field(DEFAULT_PROMPT, description="Prompt template: '{redacted}' is the record's redacted "
                        "form, '{examples}' the few-shot redacted examples (may be empty).")
    few_shot: int = Field(0, ge=0, le=8, description="Redacted examples of other records put in '{examples}'.")
    max_tokens: int = Field(128, ge=1, description="Most tokens generated per sample.")
    temperature: float = Field(0.8, ge=0.0, description="Sampling temperature (0: greedy).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass (0-1].")
    max_model_len: int = Field(512, ge=16, description="Context of the engine, prompt + sample (tokens).")
    kv_cache_gib: float = Field(1.0, gt=0, description="KV cache per engine on CPU (GiB, VLLM_CPU_KVCACHE_SPACE).")
    dtype: str = Field("float32", description="Weights dtype in the engine (float32, bfloat16, ...).")
    engines: int = Field(1, ge=1, description="vLLM engine actors (Ray Data actor pool size).")
    cpus: float = Field(1.0, gt=0, description="Logical CPUs per engine actor.")
    gpus: float = Field(0.0, ge=0, description="GPUs per engine actor (0 on CPU clusters).")
    batch_size: int = Field(16, ge=1, description="Records per Ray Data batch handed to an engine.")

    @model_validator(mode="after")
    def _one_model(self) -> TeacherConfig:
        if (self.model is None) == (self.path is None):
            raise ValueError("teacher: give exactly one of `model` (a registry model) or `path` (a folder)")
        if "{redacted}" not in self.prompt:
            raise ValueError("teacher.prompt must contain '{redacted}'")
        return self


class TemplateConfig(Section):
    """The organisation's templates; slots `{TYPE}` or `{TYPE:key}` are filled by fake-value providers."""

    templates: list[str] = Field(default_factory=list, description="Templates written inline.")
    file: str | None = Field(None, description="Or a text file of templates separated by lines '---' (local path "
                             "or fsspec URI; may start with '{storage_root}').")
    values: dict[str, list[str]] = Field(
        default_factory=dict, description="Extra slot types and their values, e.g. {PRODUCT: [K2 logger, ...]} "
        "(organisation vocabulary, not personal data); built-in types are the PII entities.")

    @model_validator(mode="after")
    def _some_templates(self) -> TemplateConfig:
        if not self.templates and not self.file:
            raise ValueError("template: give `templates` or `file`")
        return self


class SourceSynthConfig(Section):
    """How one restricted source becomes synthetic."""

    strategy: Strategy = Field(description="'surrogate', 'teacher' or 'template' (docs/synthesize.md).")
    name: str | None = Field(None, pattern=SOURCE_NAME_PATTERN, description="Name of the synthetic source in "
                             "manifests and mixture weights (default '<source>_synthetic').")
    samples_per_record: int | None = Field(None, ge=1, le=64, description="Synthetic samples per restricted "
                                           "record (default: synthesize.samples_per_record).")
    teacher: TeacherConfig | None = Field(None, description="The teacher (strategy 'teacher').")
    template: TemplateConfig | None = Field(None, description="The templates (strategy 'template').")

    @model_validator(mode="after")
    def _strategy_has_its_section(self) -> SourceSynthConfig:
        if self.strategy == "teacher" and self.teacher is None:
            raise ValueError("strategy 'teacher' needs a `teacher` section")
        if self.strategy == "template" and self.template is None:
            raise ValueError("strategy 'template' needs a `template` section")
        return self


class PrivacyConfig(Section):
    """The checks every synthetic record passes before it is kept (each failure counted by reason)."""

    ngram_tokens: int = Field(13, ge=4, le=256, description="Shortest run of tokens (words and punctuation "
                              "marks, lower-cased) a synthetic record may not share with any restricted record.")
    ngram_scope: Literal["auto", "all", "identifiers"] = Field(
        "auto", description="Which restricted n-grams count: 'all', or 'identifiers' (those overlapping a detected "
        "entity); 'auto' = 'identifiers' for surrogate (it keeps the record's other text by design), 'all' otherwise.")
    probe_tokens: int = Field(4, ge=2, le=16, description="Shortest run (tokens) the reported "
                              "`max_shared_ngram_tokens` measures; below it the figure reads probe_tokens - 1.")
    min_distance: float | None = Field(None, ge=0.0, le=1.0, description="Drop a record closer than this to its "
                                       "closest restricted record (MinHash Jaccard distance of word 3-grams, 0-1); "
                                       "null: distance is only reported.")
    canaries_file: str | None = Field(None, description="Planted-values file whose canaries must not appear "
                                      "(JSON with 'canaries': [{canary}]; may start with '{storage_root}').")
    rescan: bool = Field(True, description="Re-scan each record with the prepare PII scanner: a detected entity "
                         "that the strategy did not insert drops the record.")


class SynthesizeConfig(Section):
    """Restricted records of the prepared dataset -> synthetic sources under <version>/synthetic/<source>/."""

    dataset_version: str = Field("latest", description="Prepared dataset version to read (default: LATEST).")
    seed: int = Field(0, ge=0, description="Seed of every random choice (fakes, date shifts, templates, sampling).")
    samples_per_record: int = Field(1, ge=1, le=64, description="Synthetic samples per restricted record.")
    date_shift_days: int = Field(365, ge=1, description="Largest shift of dates (days); one shift per record.")
    batch_size: int = Field(64, ge=1, description="Records per Ray Data batch (surrogate, template, checks).")
    sources: dict[str, SourceSynthConfig] = Field(default_factory=dict, description="Strategy per restricted "
                                                  "source, by source name.")
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig, description="Privacy checks.")

    def output_name(self, source: str) -> str:
        return self.sources[source].name or f"{source}_synthetic"

    def output_names(self) -> list[str]:
        return [self.output_name(s) for s in self.sources]

    def samples(self, source: str) -> int:
        return self.sources[source].samples_per_record or self.samples_per_record


def synthesize_problems(config) -> list[str]:
    """Cross-section rules of the `synthesize` section against `data` and `prepare` (the forge file's)."""
    problems = []
    names = config.data.names
    for source, scfg in config.synthesize.sources.items():
        if source not in names:
            problems.append(f"synthesize.sources names unknown source {source!r}; sources are {names}")
            continue
        src = next(s for s in config.data.sources if s.name == source)
        policy = config.prepare.pii.policy(src.sensitivity)
        if src.sensitivity != "restricted" and policy != "restrict":  # restricted sources are routed whole
            problems.append(f"synthesize.sources.{source}: source {source!r} is {src.sensitivity}, whose PII policy "
                            f"is {policy!r}: prepare writes no restricted records for it (use sensitivity "
                            "'restricted' or prepare.pii.<sensitivity>: restrict)")
        if scfg.strategy == "surrogate" and not config.prepare.pii.entities_of(source):
            problems.append(f"synthesize.sources.{source}: strategy 'surrogate' replaces detected entities, but "
                            f"prepare.pii looks for none in {source!r}")
    out = config.synthesize.output_names()
    clash = sorted({n for n in out if n in names or out.count(n) > 1})
    if clash:
        problems.append(f"synthetic source names {clash} clash with a source or with each other")
    return problems
