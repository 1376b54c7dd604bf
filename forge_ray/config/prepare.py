"""`prepare`: how raw corpora become a prepared dataset (docs/prepare.md walks through each stage)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from forge_ray.config.base import Section, check_regex

Policy = Literal["redact", "drop", "restrict"]
ENTITY_NAME = r"^[A-Z][A-Z0-9_]{1,31}$"
BUILTIN_ENTITIES = ("EMAIL", "PHONE", "IBAN", "CREDIT_CARD", "IP_ADDRESS", "SECRET")


class PatternConfig(Section):
    """An organisation-specific pattern (employee ids, project code names...)."""

    name: str = Field(pattern=ENTITY_NAME, description="Entity name; its placeholder is '<NAME>'.")
    regex: str = Field(min_length=1, description="Python regular expression matching the value.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, regex: str) -> str:
        return check_regex(regex)


class DenyListConfig(Section):
    """Terms that must never reach the shards (client names, internal hostnames...)."""

    name: str = Field(pattern=ENTITY_NAME, description="Entity name; its placeholder is '<NAME>'.")
    terms: list[str] = Field(min_length=1, description="Terms, matched case-insensitively as whole words.")


class PiiConfig(Section):
    """Personal data and secrets: what is detected, and what happens to a record that has some."""

    entities: list[str] = Field(
        default_factory=lambda: list(BUILTIN_ENTITIES),
        description=f"Built-in detectors to run, any of {list(BUILTIN_ENTITIES)}.",
    )
    public: Policy = Field("redact", description="Policy for records of 'public' sources that contain PII: "
                           "'redact' (typed placeholders such as <EMAIL>), 'drop', or 'restrict' (route the "
                           "original to the restricted output for the synthetic-data stage).")
    internal: Policy = Field("redact", description="Policy for records of 'internal' sources that contain PII.")
    restricted: Policy = Field("restrict", description="Policy for records of 'restricted' sources that contain PII.")
    phone_regions: list[str] = Field(
        default_factory=lambda: ["US", "GB", "DE", "FR", "JP", "IN", "CA", "BR"],
        description="ISO region codes for phone numbers written without a country prefix "
        "(numbers with '+<country>' are found whatever the region).",
    )
    min_score: float = Field(0.3, ge=0.0, le=1.0, description="Lowest presidio recogniser score kept (0-1).")
    entropy_min_length: int = Field(
        20, ge=8, description="Shortest token (characters) tested as a high-entropy secret."
    )
    entropy_bits: float = Field(
        4.2, ge=0.0, description="Shannon entropy (bits per character) from which a token with letters "
        "and digits counts as a secret."
    )
    patterns: list[PatternConfig] = Field(default_factory=list, description="Custom patterns to redact.")
    deny_lists: list[DenyListConfig] = Field(default_factory=list, description="Custom deny-lists to redact.")

    @field_validator("entities")
    @classmethod
    def _known(cls, entities: list[str]) -> list[str]:
        unknown = sorted(set(entities) - set(BUILTIN_ENTITIES))
        if unknown:
            raise ValueError(f"unknown entities {unknown}; known: {list(BUILTIN_ENTITIES)}")
        return entities

    def policy(self, sensitivity: str) -> Policy:
        return getattr(self, sensitivity)


class DedupConfig(Section):
    """Exact and near-duplicate removal, within and across sources."""

    exact: bool = Field(True, description="Drop records whose normalised text hash was seen (first kept).")
    near: bool = Field(True, description="Drop near-duplicates found by MinHash + LSH.")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard similarity (0-1) of word shingles "
                             "above which two records are near-duplicates.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations per record.")
    shingle_words: int = Field(5, ge=1, le=32, description="Words per shingle (n-gram size).")


class QualityConfig(Section):
    """Heuristic quality filters in the manner of Gopher (Rae et al. 2021), each with its own count."""

    min_words: int = Field(5, ge=0, description="Fewest words a record may have.")
    max_words: int = Field(200_000, ge=1, description="Most words a record may have.")
    exempt_sources: list[str] = Field(
        default_factory=list,
        description="Sources (e.g. code) to which only the length filters apply, not the prose heuristics below.",
    )
    min_mean_word_length: float = Field(2.5, ge=0, description="Shortest mean word length, in characters.")
    max_mean_word_length: float = Field(12.0, gt=0, description="Longest mean word length, in characters.")
    max_symbol_ratio: float = Field(0.1, ge=0, description="Most '#' and '...' per word.")
    max_digit_ratio: float = Field(0.25, ge=0, le=1, description="Largest share of characters that are digits.")
    min_alpha_word_ratio: float = Field(0.6, ge=0, le=1, description="Smallest share of words with a letter.")
    max_duplicate_line_ratio: float = Field(0.3, ge=0, le=1, description="Largest share of lines that repeat an earlier line.")
    max_top_ngram_ratio: float = Field(0.2, ge=0, le=1, description="Largest share of characters covered by the "
                                       "most frequent word 2-gram.")
    max_duplicate_ngram_ratio: float = Field(0.3, ge=0, le=1, description="Largest share of characters in "
                                             "repeated word 5-grams.")


class TokenizerConfig(Section):
    """The tokenizer: train the organisation's own byte-level BPE, or reuse an existing one."""

    mode: Literal["train", "reuse"] = Field("train", description="'train' a byte-level BPE on the cleaned "
                                            "training text, or 'reuse' the tokenizer folder at `path`.")
    path: str | None = Field(None, description="Tokenizer folder to reuse (AutoTokenizer-loadable, local path); mode 'reuse' only.")
    vocab_size: int = Field(8192, ge=300, le=1 << 20, description="Vocabulary size (tokens), special tokens included.")
    min_frequency: int = Field(2, ge=1, description="Fewest occurrences of a pair for a merge.")
    eos_token: str = Field("<|endoftext|>", min_length=1, description="End-of-document token, put between documents.")
    pad_token: str = Field("<|pad|>", min_length=1, description="Padding token (last sequence of a split only).")
    bos_token: str | None = Field(None, description="Beginning-of-document token, or none.")
    special_tokens: list[str] = Field(default_factory=list, description="Further special tokens.")
    max_train_mb: float = Field(256.0, gt=0, description="Most cleaned text used to train it, in MB (a "
                                "deterministic prefix of the training split).")

    @model_validator(mode="after")
    def _reuse_needs_path(self) -> TokenizerConfig:
        if self.mode == "reuse" and not self.path:
            raise ValueError("tokenizer.mode 'reuse' needs tokenizer.path")
        if self.eos_token == self.pad_token:
            raise ValueError("eos_token and pad_token must differ (padding is masked, EOS is trained on)")
        return self


class PrepareConfig(Section):
    """Turning raw corpora into packed token shards."""

    dataset: str = Field(
        "default",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="Name of the prepared dataset, under <storage_root>/datasets/<dataset>/.",
    )
    seq_len: int = Field(256, ge=8, le=1 << 20, description="Tokens per packed sequence.")
    eval_fraction: float = Field(
        0.05, ge=0.0, lt=1.0, description="Fraction of documents per source held out for evaluation "
        "(at least one document per source when > 0)."
    )
    seed: int = Field(0, description="Seed for every random choice of the prepare stage.")
    max_record_bytes: int = Field(
        1_000_000, ge=1, description="Longest record text, in UTF-8 bytes; longer ones are quarantined."
    )
    read_chunk_mb: float = Field(
        1.0, gt=0, description="Read unit size in MB: uncompressed jsonl is cut at line boundaries and "
        "parquet row groups into row slices of about this size, one Ray Data task each (the unit of "
        "parallelism of the scan); compressed files and text files are one unit each."
    )
    shard_sequences: int = Field(8192, ge=1, description="Most sequences per output shard file.")
    quarantine_raw_bytes: int = Field(
        4096, ge=0, description="Bytes of each quarantined record's raw text kept in the quarantine."
    )
    pii: PiiConfig = Field(default_factory=PiiConfig, description="Personal data and secrets.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Duplicate removal.")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Quality filters.")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="The tokenizer.")
