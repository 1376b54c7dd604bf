"""KPI suites: the organisation's own tests of a model, one YAML file per suite.

    name: support-triage          # unique among the suites of a forge file
    weight: 2.0                   # share of the weighted KPI score
    threshold: 0.75               # the suite passes when its mean case score >= this
    max_tokens: 32                # default answer length for generated cases, in tokens
    cases:
      - {id: refund, prompt: "...", scorer: contains, expected: "refund"}
      - {id: code, prompt: "...", scorer: regex, pattern: "E\\d{3}"}
      - {id: temp, prompt: "...", scorer: numeric, expected: 21.5, tolerance: 0.5}
      - {id: ticket, prompt: "...", scorer: json_schema, schema: {type: object, required: [id]}}
      - {id: pick, prompt: "...", scorer: choice, choices: [" yes", " no"], answer: " yes"}
      - id: chat                  # a chat case: OpenAI `messages` instead of `prompt`, rendered
        messages:                 # with the model's chat template and its generation prompt
          - {role: system, content: "You answer Kestrel support questions."}
          - {role: user, content: "Which product is ticket KST-000123 about?"}
        scorer: contains
        expected: "Router"

Every suite is validated when it is loaded (`load_suites`), before any model loads: an unknown
scorer, a regex that does not compile, a JSON schema that is not one, or a missing field is a
`SuiteError` naming the file and the case; so is a chat case with an unknown role, no user turn,
or an assistant turn last (the model answers after the last user or tool turn).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from forge_ray.config.base import Section, check_regex
from forge_ray.config.loader import field_path
from forge_ray.errors import ConfigError

SCORERS = ("exact", "contains", "regex", "numeric", "json_schema", "choice")


class SuiteError(ConfigError):
    """A KPI suite file is missing or invalid; `problems` names each bad field."""


CHAT_ROLES = ("system", "user", "assistant", "tool")


class ChatMessage(Section):
    """One turn of a chat case (OpenAI `messages`; text content only)."""

    role: str = Field(description=f"Who speaks: one of {list(CHAT_ROLES)}.")
    content: str = Field(description="What the turn says.")

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role not in CHAT_ROLES:
            raise ValueError(f"unknown role {role!r}; roles are {list(CHAT_ROLES)}")
        return role


class BaseCase(Section):
    id: str = Field(min_length=1, description="Case id, unique in its suite.")
    prompt: str | None = Field(None, min_length=1, description="The prompt sent to the model as is (a completion).")
    messages: list[ChatMessage] | None = Field(
        None, min_length=1, description="Instead of `prompt`: a conversation (OpenAI chat `messages`), rendered "
        "with the model's chat template and its generation prompt; the model's answer is the next assistant turn.")

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> BaseCase:
        if self.prompt is None and self.messages is None:
            raise ValueError("`prompt` (a completion) or `messages` (a chat) is required")
        if self.prompt is not None and self.messages is not None:
            raise ValueError("give `prompt` (a completion) or `messages` (a chat), not both")
        if self.messages is not None:
            roles = [m.role for m in self.messages]
            if "user" not in roles:
                raise ValueError(f"messages have no user turn (roles {roles})")
            if roles[-1] == "assistant":
                raise ValueError("the last message is the assistant's: end with the user (or tool) turn the "
                                 "model answers")
            if "system" in roles[1:]:
                raise ValueError("a system message may only come first")
        return self

    @property
    def chat(self) -> list[dict] | None:
        """The conversation as plain dicts (what a chat template renders), or None for a completion case."""
        return [m.model_dump() for m in self.messages] if self.messages is not None else None


class _Generated(BaseCase):
    max_tokens: int | None = Field(None, ge=1, description="Answer length in tokens (default: the suite's).")
    stop: list[str] = Field(default_factory=list, description="Strings that end the answer.")


class ExactCase(_Generated):
    scorer: Literal["exact"] = Field(description="Answer equals `expected` (whitespace-trimmed).")
    expected: str = Field(description="The exact answer.")
    ignore_case: bool = Field(False, description="Compare case-insensitively.")


class ContainsCase(_Generated):
    scorer: Literal["contains"] = Field(description="Answer contains `expected`.")
    expected: str = Field(min_length=1, description="A substring the answer must contain.")
    ignore_case: bool = Field(False, description="Compare case-insensitively.")


class RegexCase(_Generated):
    scorer: Literal["regex"] = Field(description="`pattern` matches somewhere in the answer.")
    pattern: str = Field(min_length=1, description="A Python regular expression (re.search).")
    ignore_case: bool = Field(False, description="Match case-insensitively.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        return check_regex(pattern)


class NumericCase(_Generated):
    scorer: Literal["numeric"] = Field(description="The first number in the answer is within tolerance.")
    expected: float = Field(description="The expected number.")
    tolerance: float = Field(0.0, ge=0, description="Allowed absolute difference (in the answer's unit).")
    rel_tolerance: float = Field(0.0, ge=0, description="Allowed difference relative to |expected|, a fraction.")


class JsonSchemaCase(_Generated):
    scorer: Literal["json_schema"] = Field(description="The answer's first JSON value validates against `schema`.")
    json_schema: dict[str, Any] = Field(alias="schema", description="A JSON Schema (any draft jsonschema knows).")

    @field_validator("json_schema")
    @classmethod
    def _is_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as e:
            raise ValueError(f"not a valid JSON schema: {e.message}") from None
        return schema


class ChoiceCase(BaseCase):
    scorer: Literal["choice"] = Field(description="The answer is the choice with the highest log-likelihood.")
    choices: list[str] = Field(min_length=2, description="Continuations of the prompt to rank.")
    answer: str = Field(description="The right choice (one of `choices`).")
    length_normalize: bool = Field(
        False, description="Rank by log-likelihood per character instead of the total."
    )

    @model_validator(mode="after")
    def _answer_is_a_choice(self) -> ChoiceCase:
        if len(set(self.choices)) != len(self.choices):
            raise ValueError("choices must be distinct")
        if self.answer not in self.choices:
            raise ValueError(f"answer {self.answer!r} is not one of the choices {self.choices}")
        return self


Case = Annotated[
    ExactCase | ContainsCase | RegexCase | NumericCase | JsonSchemaCase | ChoiceCase,
    Field(discriminator="scorer"),
]


class Suite(Section):
    """One KPI suite: cases, a weight in the overall score and a pass threshold."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", description="Suite name.")
    description: str = Field("", description="What the suite checks, for the report.")
    weight: float = Field(gt=0, description="Weight of this suite in the weighted KPI score.")
    threshold: float = Field(ge=0, le=1, description="Pass threshold: mean case score, a fraction.")
    max_tokens: int = Field(32, ge=1, description="Default answer length of generated cases, in tokens.")
    cases: list[Case] = Field(min_length=1, description="The cases.")

    @field_validator("cases")
    @classmethod
    def _unique_ids(cls, cases: list) -> list:
        seen: set[str] = set()
        for case in cases:
            if case.id in seen:
                raise ValueError(f"case id {case.id!r} is used twice")
            seen.add(case.id)
        return cases


def _problems(err: ValidationError, raw: dict) -> list[str]:
    """One line per problem, naming the case by index and id: `cases[2] (id 'x').pattern: ...`."""
    cases = raw.get("cases") if isinstance(raw.get("cases"), list) else []
    problems = []
    for e in err.errors():
        loc = [p for p in e["loc"] if p not in SCORERS]  # drop the union's tag from the path
        if e["type"] == "union_tag_invalid":
            e = {**e, "msg": f"unknown scorer {e['input'].get('scorer')!r}; scorers are {list(SCORERS)}"}
            loc.append("scorer")
        elif e["type"] == "union_tag_not_found":
            e = {**e, "type": "missing", "msg": f"required field is missing; scorers are {list(SCORERS)}"}
            loc.append("scorer")
        line = format_validation_error_line(e, tuple(loc))
        if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int) and loc[1] < len(cases):
            case = cases[loc[1]]
            if isinstance(case, dict) and case.get("id"):
                line = line.replace(f"cases[{loc[1]}]", f"cases[{loc[1]}] (id {case['id']!r})", 1)
        problems.append(line)
    return problems


def format_validation_error_line(e: dict, loc: tuple) -> str:
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key (not a field of this scorer)"
    elif e["type"] == "missing" and "scorers are" not in msg:
        msg = "required field is missing"
    return f"{field_path(loc)}: {msg}"


def parse_suite(raw: Any, source: str) -> Suite:
    """Validate one suite's parsed YAML; raise SuiteError naming every bad field."""
    if not isinstance(raw, dict):
        raise SuiteError(source, [f"a suite is a mapping (name, weight, threshold, cases), got {type(raw).__name__}"])
    try:
        return Suite.model_validate(raw)
    except ValidationError as e:
        raise SuiteError(source, _problems(e, raw)) from None


def load_suite(path: str | Path) -> Suite:
    """A suite file: a local path or a URI (`s3://...`, read with the store's settings)."""
    if "://" in str(path) and not str(path).startswith("file://"):
        return _load_remote_suite(str(path))
    path = Path(str(path).removeprefix("file://"))
    if not path.is_file():
        raise SuiteError(str(path), ["KPI suite file not found" if not path.exists() else "not a file"])
    return _parse_text(path.read_text(encoding="utf-8"), str(path))


def _load_remote_suite(uri: str) -> Suite:
    from forge_ray.storage import url_to_fs

    try:
        fs, path = url_to_fs(uri)
        text = fs.cat_file(path).decode("utf-8")
    except FileNotFoundError:
        raise SuiteError(uri, ["KPI suite file not found"]) from None
    except Exception as e:  # noqa: BLE001 - unreachable store, denied: the suite cannot be read
        raise SuiteError(uri, [f"cannot read: {type(e).__name__}: {e}"]) from None
    return _parse_text(text, uri)


def _parse_text(text: str, source: str) -> Suite:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SuiteError(source, [f"YAML syntax error: {e}"]) from None
    return parse_suite(raw, source)


def load_suites(paths: list[str]) -> list[Suite]:
    """Load every suite of a forge file; all problems of all files are reported together."""
    suites, problems = [], []
    for path in paths:
        try:
            suites.append(load_suite(path))
        except SuiteError as e:
            problems += [f"{e.source}: {p}" for p in e.problems]
    names = [s.name for s in suites]
    problems += [f"suite name {n!r} is used by more than one file" for n in sorted(set(names)) if names.count(n) > 1]
    if problems:
        raise SuiteError("eval.suites", problems)
    return suites
