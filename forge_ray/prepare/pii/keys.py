"""Secrets: detect-secrets' key and token regexes, whole PEM private-key blocks, high-entropy tokens."""

from __future__ import annotations

import re

from forge_ray.prepare.pii.spans import Span

# detect-secrets plugins left out: IP addresses are presidio's job; the keyword, basic-auth and
# quoted-string entropy plugins need file context (we test bare-token entropy ourselves).
_SKIP_PLUGINS = {"IPPublicDetector", "KeywordDetector", "Base64HighEntropyString", "HexHighEntropyString",
                 "PrivateKeyDetector"}
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*-----|\Z)", re.S)
_SECRET_LINE = re.compile(r"[A-Za-z0-9+/=_\-]{16,}|://[^\s/@]+@")
_TOKEN = r"[A-Za-z0-9+/=_\-]"  # one character of a token; the entropy test adds the length


class SecretFinder:
    def __init__(self, entropy_min_length: int, entropy_bits: float):
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
        from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString

        self.regexes = [r for cls in get_mapping_from_secret_type_to_class().values()
                        if cls.__name__ not in _SKIP_PLUGINS for r in getattr(cls(), "denylist", ())]
        self.long_token = re.compile(f"{_TOKEN}{{{entropy_min_length},}}")
        self.entropy = Base64HighEntropyString().calculate_shannon_entropy
        self.bits = entropy_bits

    def find(self, text: str) -> list[Span]:
        spans = [Span(m.start(), m.end(), "SECRET") for m in _PEM.finditer(text)]
        return spans + self._patterns(text) + self._high_entropy(text)

    def _patterns(self, text: str) -> list[Span]:
        """detect-secrets' regexes, run on the lines that could hold a key or token.

        Every format they match is a long token (16+ characters) or a URL with credentials, so
        lines without one are skipped: ~40 regexes over every line of a corpus cost more than
        all the other detectors together.
        """
        spans, done = [], -1
        for hit in _SECRET_LINE.finditer(text):  # no match crosses a newline: one line each
            if hit.start() < done:
                continue  # its line is done
            offset = text.rfind("\n", 0, hit.start()) + 1
            done = text.find("\n", hit.end())
            done = len(text) if done < 0 else done
            line = text[offset:done]
            for regex in self.regexes:
                spans += [Span(offset + m.start(), offset + m.end(), "SECRET")
                          for m in regex.finditer(line) if m.end() > m.start()]
        return spans

    def _high_entropy(self, text: str) -> list[Span]:
        spans = []
        for m in self.long_token.finditer(text):
            tok = m.group()
            if any(c.isdigit() for c in tok) and any(c.isalpha() for c in tok) and self.entropy(tok) >= self.bits:
                spans.append(Span(m.start(), m.end(), "SECRET"))
        return spans
