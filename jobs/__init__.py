"""Thin job entry points: `python -m jobs.<name> --config FILE` (also via `ray job submit`)."""
