"""Synthesize: restricted records -> a privacy-checked synthetic source the mixture weighs like any other.

    from forge_ray.synthesize import synthesize, open_synthetic
    manifests = synthesize(config)                       # every source of `synthesize.sources`
    synth = open_synthetic(dataset, "tickets")            # a PreparedDataset with one source
    plan = build_plan([dataset, synth], config.mixture, ...)
    mixed = with_synthetic(dataset, ["tickets"])          # or one PreparedDataset (what training takes)

Strategies (docs/synthesize.md): `surrogate` (entities -> consistent fakes of the same type and
format), `teacher` (a model on vLLM writes new records from redacted ones), `template`
(organisation templates, typed slots filled by fake providers). Every sample passes the privacy
checks (privacy.py) before it is kept.
"""

from forge_ray.synthesize.output import (
    list_synthetic,
    open_synthetic,
    read_preview,
    read_samples,
    training_dataset,
    with_synthetic,
)
from forge_ray.synthesize.records import SynthesizeError
from forge_ray.synthesize.run import synthesize

__all__ = ["SynthesizeError", "list_synthetic", "open_synthetic", "read_preview", "read_samples", "synthesize",
           "training_dataset", "with_synthetic"]
