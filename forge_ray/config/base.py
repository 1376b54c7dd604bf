"""The base of every forge-file section: unknown keys are errors, every field is described."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A section (or sub-section) of the forge file.

    `extra="forbid"` makes a misspelt key an error naming it; `validate_assignment`
    keeps `--set` overrides and programmatic edits under the same rules as the file.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


def check_regex(pattern: str) -> str:
    """A field validator body: the pattern as given, or a ValueError saying why it does not compile."""
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"regex does not compile: {e}") from None
    return pattern
