"""Suitability: find personal data and secrets in a text, and redact them with typed placeholders.

    from forge_ray.prepare.pii import PiiScanner
    text, counts = PiiScanner(pii_config).redact(text)      # "<PERSON> lives at <ADDRESS>", {...}

Detectors (no model download, no network), one module per family:
- `presidio`: presidio-analyzer's pattern recognisers (e-mail, phone, IBAN mod-97, card Luhn, IP);
- `keys`: detect-secrets' key / token regexes, PEM private-key blocks, high-entropy tokens;
- `ids`: national identifiers with their check digits (US SSN, UK NHS, FR NIR, DE Steuer-IdNr,
  IT codice fiscale, ES DNI / NIE, NL BSN, SG NRIC / FIN) and passport numbers by context;
- `context`: dates of birth (a date after a birth keyword), postal addresses (EU, UK, US, SG);
- `names`: person names, from a gazetteer, titles and context cues, and a spaCy NER model run
  only on the sentences where those leave a candidate undecided;
- the config's custom patterns (bounded per record by a timeout) and deny-lists.
docs/pii.md lists every entity, its placeholder and how it is found.
"""

from forge_ray.prepare.pii.scanner import ENTITIES, PLACEHOLDERS, PatternTimeout, PiiScanner, placeholder
from forge_ray.prepare.pii.spans import Span

__all__ = ["ENTITIES", "PLACEHOLDERS", "PatternTimeout", "PiiScanner", "Span", "placeholder"]
