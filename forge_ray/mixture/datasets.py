"""The prepared datasets one run mixes: the forge file's own plus those `mixture.datasets` names.

    datasets = mixed_datasets(dataset, cfg.mixture)   # [dataset, *opened]; build_plan calls it

Instruction tuning keeps domain knowledge by mixing pre-training data in by weight
(docs/sft.md): `prepare.dataset` is the SFT dataset, `mixture.datasets: [demo]` adds the
pre-training dataset's sources, `mixture.weights` weighs all of them. A row of a dataset without a
loss mask counts every real token as a target (`reader.read_samples`), so one SFT run consumes both.
The datasets must share the tokenizer's vocabulary and special tokens (an SFT dataset reuses its
base model's tokenizer and adds a chat template, so the files differ but the ids agree) and seq_len.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from forge_ray.config.mixture import MixtureConfig
from forge_ray.mixture.shares import MixtureError

if TYPE_CHECKING:
    from forge_ray.prepare.dataset import PreparedDataset

_SAME_IDS = ("vocab_size", "eos_token_id", "pad_token_id")


def _ref(ref: str) -> tuple[str, str]:
    name, _, version = ref.partition("@")
    return name, version or "latest"


def mixed_datasets(dataset: PreparedDataset | Sequence[PreparedDataset],
                   mixture_cfg: MixtureConfig) -> list[PreparedDataset]:
    """`dataset` (or the list given) plus each dataset `mixture_cfg.datasets` names, opened from the
    first one's storage; one already in the list is not opened twice. MixtureError naming a dataset
    that is missing or whose tokenizer ids differ from the first one's."""
    from forge_ray.prepare.dataset import DatasetError, open_dataset

    datasets = list(dataset) if isinstance(dataset, Sequence) else [dataset]
    if not datasets or not mixture_cfg.datasets:
        return datasets
    first = datasets[0]
    have = {(d.dataset, d.version) for d in datasets} | {(d.dataset, "latest") for d in datasets}
    for ref in mixture_cfg.datasets:
        name, version = _ref(ref)
        if (name, version) in have:
            continue
        try:
            other = open_dataset(first.storage, name, version)
        except DatasetError as e:
            raise MixtureError(f"mixture.datasets {ref!r}: {e}") from None
        mine, theirs = first.manifest["tokenizer"], other.manifest["tokenizer"]
        differ = [k for k in _SAME_IDS if mine.get(k) != theirs.get(k)]
        if differ:
            raise MixtureError(
                f"mixture.datasets {ref!r}: its tokenizer differs from {first.dataset}/{first.version}'s ("
                + ", ".join(f"{k} {theirs.get(k)} vs {mine.get(k)}" for k in differ)
                + "): prepare both with the same tokenizer")
        datasets.append(other)
        have |= {(other.dataset, other.version), (name, version)}
    return datasets

