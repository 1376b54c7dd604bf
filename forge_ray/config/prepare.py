"""`prepare`: how raw corpora become a prepared dataset (docs/prepare.md walks through each stage)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from forge_ray.config.base import Section

Policy = Literal["redact", "drop", "restrict"]
ENTITY_NAME = r"^[A-Z][A-Z0-9_]{1,31}$"
# Built-in detectors (docs/pii.md: what each finds and how); each is redacted as '<NAME>'.
BUILTIN_ENTITIES = (
    "EMAIL", "PHONE", "IBAN", "CREDIT_CARD", "IP_ADDRESS", "SECRET",                   # structured
    "PERSON", "ADDRESS", "DATE_OF_BIRTH",                                             # in context
    "US_SSN", "UK_NHS", "FR_NIR", "DE_TAX_ID", "IT_FISCAL_CODE", "ES_DNI", "ES_NIE",  # national IDs,
    "NL_BSN", "SG_NRIC", "PASSPORT",                                                  # check digits
)


def _check_entities(entities: list[str]) -> list[str]:
    unknown = sorted(set(entities) - set(BUILTIN_ENTITIES))
    if unknown:
        raise ValueError(f"unknown entities {unknown}; known: {list(BUILTIN_ENTITIES)}")
    return entities


# Inputs on which a pattern with nested or overlapping repetition ("(a+)+$", "(\\w+\\s?)*!") takes
# exponential time: a long run of one kind of character that fails at its very end.
_BACKTRACK_PROBES = tuple(c * 28 + "\x00" for c in ("a", "0", "a ", "a.", "aA0", "-", " "))


class PatternConfig(Section):
    """An organisation-specific pattern (employee ids, project code names...)."""

    name: str = Field(pattern=ENTITY_NAME, description="Entity name; its placeholder is '<NAME>'.")
    regex: str = Field(min_length=1, description="Regular expression matching the value (the `regex` module's "
                       "syntax, a superset of Python's `re`); bounded per record by `pii.pattern_timeout_s`.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, regex: str) -> str:
        import regex as rx

        try:
            compiled = rx.compile(regex)
        except rx.error as e:
            raise ValueError(f"regex does not compile: {e}") from None
        for probe in _BACKTRACK_PROBES:  # fail fast on the classic cases; the timeout bounds the rest
            try:
                compiled.search(probe, timeout=0.2)
            except TimeoutError:
                raise ValueError(f"regex backtracks catastrophically (over 0.2 s on {probe[:12]!r}...): "
                                 "rewrite it without nested or overlapping repetition") from None
        return regex


class DenyListConfig(Section):
    """Terms that must never reach the shards (client names, internal hostnames...)."""

    name: str = Field(pattern=ENTITY_NAME, description="Entity name; its placeholder is '<NAME>'.")
    terms: list[str] = Field(min_length=1, description="Terms, matched case-insensitively as whole words.")


class SourcePiiConfig(Section):
    """What to look for in one source, instead of `prepare.pii.entities` (custom patterns and
    deny-lists apply to every source)."""

    entities: list[str] = Field(description=f"Built-in detectors to run on this source, any of {list(BUILTIN_ENTITIES)}.")

    @field_validator("entities")
    @classmethod
    def _known(cls, entities: list[str]) -> list[str]:
        return _check_entities(entities)


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

    sources: dict[str, SourcePiiConfig] = Field(
        default_factory=dict, description="Per-source selection of entities, by source name (sources not "
        "listed use `entities`).")
    ner_model: str | None = Field(
        "fr_core_news_sm", description="Installed spaCy pipeline whose `ner` component decides the person-name "
        "candidates that titles, context cues and the gazetteer leave open (a pip package; nothing downloads). "
        "null: names by gazetteer and cues only (lower recall).")
    pattern_timeout_s: float = Field(
        0.5, gt=0, le=60, description="Longest time (seconds) one custom pattern may run on one record; past it "
        "the record is quarantined (reason 'pattern_timeout'), so a pattern that backtracks catastrophically "
        "cannot hang the run.")

    @field_validator("entities")
    @classmethod
    def _known(cls, entities: list[str]) -> list[str]:
        return _check_entities(entities)

    def policy(self, sensitivity: str) -> Policy:
        return getattr(self, sensitivity)

    def entities_of(self, source: str) -> list[str]:
        """The built-in entities looked for in `source`."""
        return self.sources[source].entities if source in self.sources else self.entities


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
    stop_words: list[str] = Field(
        default_factory=list,
        description="Gopher's stop-word rule: a record must hold at least `min_stop_words` different words of "
        "this list (case-insensitive). Off (empty) by default: Gopher's list is English (the, be, to, of, and, that, "
        "have, with) and would drop French or German records; list the common words of your languages.",
    )
    min_stop_words: int = Field(2, ge=0, description="Fewest different `stop_words` a record must hold.")
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


class PrivacyConfig(Section):
    """What of the raw data the side outputs may keep, and the key that protects it (docs/prepare.md)."""

    key_env: str | None = Field(None, description="Environment variable (read on the driver) holding a Fernet "
                                "key (url-safe base64 of 32 bytes) that encrypts raw quarantined bytes and the "
                                "restricted output.")
    key_file: str | None = Field(None, description="Local file holding that key instead; it must not lie under "
                                 "the storage root.")
    quarantine_raw: bool = Field(False, description="Also keep the first `quarantine_raw_bytes` of each "
                                 "quarantined record, encrypted with the key (needs `key_env` or `key_file`). "
                                 "Off: reason, source position and sha256 of the raw record only.")

    @model_validator(mode="after")
    def _key(self) -> PrivacyConfig:
        if self.key_env and self.key_file:
            raise ValueError("set one of key_env and key_file, not both")
        if self.quarantine_raw and not (self.key_env or self.key_file):
            raise ValueError("quarantine_raw needs a key (key_env or key_file): raw bytes are only kept encrypted")
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
        4096, ge=0, description="Bytes of each quarantined record's raw text kept (encrypted) in the quarantine "
        "when `privacy.quarantine_raw` is on."
    )
    pii: PiiConfig = Field(default_factory=PiiConfig, description="Personal data and secrets.")
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig, description="Raw data in side outputs, and its key.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Duplicate removal.")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Quality filters.")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="The tokenizer.")
