"""`code`: standard-library Python sources, one record per file, in a stable order."""

from __future__ import annotations

import sysconfig
from collections.abc import Iterator
from pathlib import Path

# Folders of the standard library that are tests, vendored or generated: skipped so the
# corpus is ordinary, hand-written code.
_SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "lib2to3", "__pycache__", "ensurepip"}


def code_records(max_bytes: int = 2_000_000, max_file_bytes: int = 60_000) -> Iterator[dict]:
    """Yield up to `max_bytes` of stdlib sources (files over `max_file_bytes` are skipped)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if _SKIP_PARTS & set(rel.parts[:-1]):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        size = len(text.encode("utf-8"))
        if not text.strip() or size > max_file_bytes:
            continue
        if total + size > max_bytes:
            return
        total += size
        yield {"id": f"code/{rel.as_posix()}", "text": text, "path": rel.as_posix()}
