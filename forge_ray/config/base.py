"""The base of every forge-file section: unknown keys are errors, every field is described."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A section (or sub-section) of the forge file.

    `extra="forbid"` makes a misspelt key an error naming it; `validate_assignment`
    keeps `--set` overrides and programmatic edits under the same rules as the file.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)
