"""Errors a user sees as one clear message (the CLI prints them without a traceback)."""


class ForgeError(Exception):
    """Base for every error forge_ray reports to a user as a message, not a traceback."""

    exit_code = 1


class ConfigError(ForgeError):
    """The forge file is missing, unreadable, or invalid; `problems` has one line per field."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


class StorageError(ForgeError):
    """The storage root cannot be used (not writable, missing, incomplete artefact)."""

    exit_code = 2


class ConflictError(StorageError):
    """A conditional write lost: another writer changed the object first (re-read, then retry)."""
