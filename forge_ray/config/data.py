"""`data`: the organisation's corpora, where they are and how sensitive they are."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from forge_ray.config.base import Section

SOURCE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
# The only template a URI may use: the project's storage root (for corpora kept beside
# the artefacts, like the embedded demo corpora).
URI_TEMPLATE = "{storage_root}"
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class SourceConfig(Section):
    """One corpus: a file, a folder or a glob of records of one format."""

    name: str = Field(
        description="Source name (a domain): lowercase identifier, unique in the file; names the "
        "source in manifests, mixture weights and per-domain metrics.",
        pattern=SOURCE_NAME_PATTERN,
    )
    uri: str = Field(
        description="fsspec URI of a file, a folder (read recursively) or a glob. May start with "
        "'{storage_root}' for corpora kept under the project's storage root.",
        min_length=1,
    )
    format: Literal["jsonl", "parquet", "text", "chat", "instruction"] = Field(
        description="Record format: 'jsonl' (one JSON object per line, also .gz / .zst), "
        "'parquet', or 'text' (each file is one document); for instruction tuning (docs/sft.md) "
        "'chat' (OpenAI `messages` per record) or 'instruction' (a prompt and a completion per record), "
        "in .jsonl (.gz) or .parquet files."
    )
    messages_field: str = Field("messages", description="Field holding a chat record's messages (format 'chat').")
    prompt_field: str = Field("prompt", description="Field holding the prompt (format 'instruction').")
    completion_field: str = Field(
        "completion", description="Field holding the answer to learn (format 'instruction')."
    )
    system_field: str | None = Field(
        None, description="Field holding an optional system prompt (format 'instruction')."
    )
    text_field: str = Field(
        "text", description="Field holding the document text (jsonl / parquet)."
    )
    id_field: str | None = Field(
        None,
        description="Field holding a stable record id; when unset the id is '<file>:<line or row>'.",
    )
    metadata_fields: list[str] = Field(
        default_factory=list,
        description="Fields carried along with each record into the quarantine and manifests.",
    )
    license: str = Field(
        description="Licence of the corpus (an SPDX identifier, or 'proprietary'); recorded in lineage.",
        min_length=1,
    )
    sensitivity: Literal["public", "internal", "restricted"] = Field(
        description="How sensitive the corpus is; the prepare policy for personal data is chosen by "
        "it ('public' and 'internal' are redacted by default, 'restricted' goes to the restricted "
        "output for synthetic replacement)."
    )

    @field_validator("uri")
    @classmethod
    def _uri_template(cls, uri: str) -> str:
        braces = re.findall(r"\{[^}]*\}", uri)
        if any(b != URI_TEMPLATE for b in braces) or (braces and not uri.startswith(URI_TEMPLATE)):
            raise ValueError(f"the only template allowed is a leading {URI_TEMPLATE!r}, got {uri!r}")
        return uri

    @property
    def is_conversational(self) -> bool:
        """Chat or instruction records: prepared for instruction tuning (forge_ray/prepare/sft_dataset.py)."""
        return self.format in ("chat", "instruction")

    @field_validator("text_field", "id_field", "messages_field", "prompt_field", "completion_field", "system_field")
    @classmethod
    def _field_name(cls, value: str | None) -> str | None:
        if value is not None and not _FIELD_NAME.match(value):
            raise ValueError(f"not a field name: {value!r}")
        return value

    @model_validator(mode="after")
    def _text_has_no_fields(self) -> SourceConfig:
        if self.format == "text" and (self.id_field or self.metadata_fields):
            raise ValueError("format 'text' has no fields: drop id_field / metadata_fields")
        return self

    def resolved_uri(self, storage_root: str) -> str:
        """The URI with '{storage_root}' filled in."""
        return self.uri.replace(URI_TEMPLATE, storage_root.rstrip("/"), 1)


class DataConfig(Section):
    """The corpora of this project."""

    sources: list[SourceConfig] = Field(
        min_length=1, description="The corpora, one entry per source (domain)."
    )

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceConfig]) -> list[SourceConfig]:
        seen: set[str] = set()
        for source in sources:
            if source.name in seen:
                raise ValueError(f"source name {source.name!r} is used twice")
            seen.add(source.name)
        return sources

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]
