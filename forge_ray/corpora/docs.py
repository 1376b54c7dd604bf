"""`docs`: the Python reference documentation topics, one record per topic."""

from __future__ import annotations

from collections.abc import Iterator


def docs_records(limit: int | None = None) -> Iterator[dict]:
    from pydoc_data.topics import topics

    for i, name in enumerate(sorted(topics)):
        if limit is not None and i >= limit:
            return
        yield {"id": f"docs/{name}", "text": topics[name], "topic": name}
