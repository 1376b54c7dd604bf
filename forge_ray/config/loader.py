"""Reading a forge file: YAML -> overrides -> validated `ForgeConfig`, or one ConfigError.

Every problem is reported at once, each as `field.path[index].name: message`, so a user
fixes the whole file in one go.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from forge_ray.config.forge_file import ForgeConfig
from forge_ray.errors import ConfigError


def field_path(loc: tuple[Any, ...]) -> str:
    """('data', 'sources', 2, 'uri') -> 'data.sources[2].uri'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def format_validation_error(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        # Model-level validators report at the model's location; skip pydantic's internal
        # tag such as 'function-after[...]' that would only confuse a user.
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and "[" in p))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not a field of this section)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif "input" in e and e["type"] not in ("value_error",) and not isinstance(e["input"], dict):
            msg = f"{msg} (got {e['input']!r})"
        problems.append(f"{field_path(loc)}: {msg}")
    return problems


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.steps=20' -> (['train', 'steps'], 20); the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--set", [f"{item!r}: expected KEY.PATH=VALUE"])
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError("--set", [f"{'.'.join(path)}: {part!r} is not a section"])
            node = child
        node[path[-1]] = value
    return raw


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), ["config file not found" if not path.exists() else "not a file"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(str(path), [f"YAML syntax error: {where}{problem}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), [f"not UTF-8 text: {e}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(str(path), [f"top level must be a mapping of sections, got {type(raw).__name__}"])
    return raw


def validate_config(raw: dict[str, Any], source: str = "<config>") -> ForgeConfig:
    try:
        return ForgeConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(source, format_validation_error(e)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ForgeConfig:
    """Load, override and validate a forge file; raise ConfigError naming every bad field."""
    raw = apply_overrides(load_yaml(path), overrides or [])
    return validate_config(raw, str(path))


def dump_config(config: ForgeConfig) -> str:
    """The resolved config as YAML (defaults filled in), as saved with every artefact."""
    return yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False)


def config_hash(config: ForgeConfig, *sections: str) -> str:
    """A content hash of the resolved config (or of some sections), for manifests and versions."""
    import hashlib

    data = config.model_dump(mode="json")
    if sections:
        data = {s: data[s] for s in sections}
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()
