"""The `template` strategy: the organisation's templates, typed slots filled by fake-value providers.

    gen = TemplateGenerator(load_templates(cfg, storage_root), cfg.values)   # checks every slot first
    gen.generate(records, samples=2, seed=0, source="tickets")

A slot is `{TYPE}` or `{TYPE:key}`: TYPE is a PII entity (a fake of that type) or a key of
`values` (the organisation's own vocabulary, drawn uniformly); the same `{TYPE:key}` within one
sample gets the same value ("{PERSON:client}" in the greeting and the sign-off). A slot whose type
has no provider is an error before anything is generated. No restricted text is used: a record
only sets how many samples are made and which stream each draws from.
"""

from __future__ import annotations

import fsspec

from forge_ray.config.synthesize import SLOT, TemplateConfig
from forge_ray.synthesize.fakes import BUILTIN_TYPES, Fakes
from forge_ray.synthesize.records import Sample, SourceRecord, SynthesizeError, sample_rng
from forge_ray.synthesize.surrogate import Generator


def load_templates(cfg: TemplateConfig, storage_root: str) -> list[str]:
    """Inline templates, then those of `file` (blocks separated by a line '---')."""
    out = list(cfg.templates)
    if cfg.file:
        uri = cfg.file.replace("{storage_root}", storage_root.rstrip("/"), 1)
        try:
            with fsspec.open(uri, "rt", encoding="utf-8") as f:
                text = f.read()
        except (OSError, ValueError) as e:
            raise SynthesizeError(f"template file {uri} cannot be read: {e}") from None
        blocks = [b.strip("\n") for b in text.replace("\r\n", "\n").split("\n---\n")]
        out += [b for b in blocks if b.strip()]
    if not out:
        raise SynthesizeError("the template strategy has no templates")
    return out


def check_slots(templates: list[str], values: dict[str, list[str]]) -> None:
    """SynthesizeError naming every slot with no provider (and the template it is in)."""
    known = set(BUILTIN_TYPES) | {k for k, v in values.items() if v}
    bad = [f"template {i + 1}: slot {{{m.group(0)[1:-1]}}} has no provider" for i, t in enumerate(templates)
           for m in SLOT.finditer(t) if m.group(1) not in known]
    if bad:
        raise SynthesizeError("; ".join(bad) + f". Providers: {sorted(known)} (add a type's values under "
                              "synthesize.sources.<source>.template.values)")


def fill(template: str, fakes: Fakes, values: dict[str, list[str]]) -> tuple[str, list[tuple[int, int]]]:
    """The template with its slots filled; the ranges of the inserted PII fakes."""
    out, inserted, last, pos = [], [], 0, 0
    chosen: dict[tuple[str, str | None], str] = {}
    for m in SLOT.finditer(template):
        kind, key = m.group(1), m.group(2)
        if (kind, key) not in chosen or key is None:
            chosen[(kind, key)] = fakes.r.choice(values[kind]) if kind in values else fakes.fake(kind, None)
        value = chosen[(kind, key)]
        keep = template[last:m.start()]
        out += [keep, value]
        pos += len(keep)
        if kind not in values:  # organisation vocabulary is no personal data; fakes are tracked
            inserted.append((pos, pos + len(value)))
        pos += len(value)
        last = m.end()
    out.append(template[last:])
    return "".join(out), inserted


class TemplateGenerator(Generator):
    strategy = "template"

    def __init__(self, templates: list[str], values: dict[str, list[str]] | None = None):
        self.templates = templates
        self.values = {k: v for k, v in (values or {}).items() if v}
        check_slots(templates, self.values)

    def describe(self) -> dict:
        return {"templates": self.templates, "value_types": sorted(self.values)}

    def one(self, record: SourceRecord, j: int, seed: int, source: str) -> Sample:
        rng = sample_rng(seed, source, record.index, j)
        template = rng.choice(self.templates)
        text, inserted = fill(template, Fakes(rng, real=self.real_values), self.values)
        return Sample(record.index, j, text, inserted, prompt=f"template:{self.templates.index(template)}")
