"""Validate: every raw record becomes one row, "ok" or "quarantined" with a reason.

Quarantine reasons: malformed_json, not_an_object, missing_text, wrong_type, empty_text,
invalid_utf8, binary_content, too_long; and, from the scan, pattern_timeout (a custom PII
pattern ran past its time on the record: it keeps no raw form, since nothing could be redacted).
A quarantined row keeps its source position (file, line or row) and the first
`quarantine_raw_bytes` of its raw form.
"""

from __future__ import annotations

import json
import re

from forge_ray.prepare.read import record_key

QUARANTINE_REASONS = (
    "malformed_json", "not_an_object", "missing_text", "wrong_type", "empty_text",
    "invalid_utf8", "binary_content", "too_long", "pattern_timeout",
)
# Control characters other than tab / newline / carriage return / form feed: text has almost
# none; a record where they are more than 1% of the characters is binary.
_CONTROL = re.compile("[\x01-\x08\x0b\x0e-\x1f\x7f]")
_MAX_CONTROL_RATIO = 0.01


def is_binary(text: str) -> bool:
    if "\x00" in text:
        return True
    sample = text[:65536]
    return len(_CONTROL.findall(sample)) > _MAX_CONTROL_RATIO * max(1, len(sample))


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, default=str)


class Validator:
    """Turns raw records of one source into rows (picklable: built on the driver, used in tasks)."""

    def __init__(self, source, max_record_bytes: int, quarantine_raw_bytes: int):
        self.source = source
        self.max_bytes = max_record_bytes
        self.raw_bytes = quarantine_raw_bytes

    def _row(self, unit: dict, pos: int, *, text: str = "", rec_id: str | None = None, meta: dict | None = None,
             reason: str = "", raw: str = "") -> dict:
        return {
            "source": unit["source"],
            "key": record_key(unit["source_idx"], unit["file_idx"], pos),
            "id": rec_id or f"{unit['file']}:{pos}",
            "position": f"{unit['file']}:{pos}",
            "text": text if not reason else "",
            "meta": _dumps(meta or {}),
            "outcome": "quarantined" if reason else "ok",
            "reason": reason,
            # encode/decode: lone surrogates (invalid UTF-8 in JSON escapes) cannot go into Arrow.
            "raw": raw[: self.raw_bytes].encode("utf-8", "replace").decode("utf-8") if reason else "",
            "pii": "",
        }

    def jsonl_line(self, unit: dict, line_no: int, line: bytes) -> dict:
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError:
            return self._row(unit, line_no, reason="invalid_utf8", raw=line.decode("utf-8", "replace"))
        try:
            rec = json.loads(decoded)
        except (json.JSONDecodeError, RecursionError):
            return self._row(unit, line_no, reason="malformed_json", raw=decoded)
        if not isinstance(rec, dict):
            return self._row(unit, line_no, reason="not_an_object", raw=decoded)
        return self.record(unit, line_no, rec, raw=decoded)

    def text_file(self, unit: dict, data: bytes) -> dict:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._row(unit, 0, reason="invalid_utf8", raw=data[: self.raw_bytes].decode("utf-8", "replace"))
        return self._check(unit, 0, text, rec_id=unit["file"], meta={}, raw=text)

    def record(self, unit: dict, pos: int, rec: dict, raw: str | None = None) -> dict:
        src = self.source
        meta = {f: rec.get(f) for f in src.metadata_fields}
        rec_id = rec.get(src.id_field) if src.id_field else None
        rec_id = str(rec_id) if rec_id not in (None, "") else None
        if raw is None:
            raw = _dumps(rec)
        value = rec.get(src.text_field)
        if value is None:
            return self._row(unit, pos, rec_id=rec_id, meta=meta, reason="missing_text", raw=raw)
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                return self._row(unit, pos, rec_id=rec_id, meta=meta, reason="invalid_utf8",
                                 raw=value.decode("utf-8", "replace"))
        if not isinstance(value, str):
            return self._row(unit, pos, rec_id=rec_id, meta=meta, reason="wrong_type", raw=raw)
        return self._check(unit, pos, value, rec_id=rec_id, meta=meta, raw=raw)

    def _check(self, unit: dict, pos: int, text: str, *, rec_id, meta, raw: str) -> dict:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates, e.g. from "\ud800" escapes in JSON
            size = -1
        if size < 0:
            reason = "invalid_utf8"
        elif not text.strip():
            reason = "empty_text"
        elif size > self.max_bytes:
            reason = "too_long"
        elif is_binary(text):
            reason = "binary_content"
        else:
            reason = ""
        return self._row(unit, pos, text=text, rec_id=rec_id, meta=meta, reason=reason, raw=raw)
