"""Chat and instruction records -> checked conversations -> token ids with an assistant-only loss
mask -> packed rows whose conversations do not see each other.

    messages, reason = conversation(record, "chat")              # (None, reason) when quarantined
    ids, mask = render_masked(messages, tokenizer, template)       # mask 1 on the assistant's tokens
    rows = pack_conversations([(ids, mask), ...], seq_len, pad_id)   # input_ids / position_ids / loss_mask

- Records: `format: chat` holds OpenAI `messages` (system / user / assistant / tool turns; an assistant
  turn may carry `tool_calls`, a `tool` turn answers one); `format: instruction` holds a prompt and a
  completion, which become one user turn and one assistant turn.
- The template is the tokenizer's own `chat_template`, or `DEFAULT_CHAT_TEMPLATE` for forge-trained
  tokenizers that have none (it is then saved with the dataset's tokenizer, so export and serving
  use the same one).
- The mask covers exactly what the template renders for each assistant turn after its generation
  prompt: the content, its tool calls and the end-of-turn token, nothing of the prompt or the other
  turns (rendered prefixes, so it holds for any template whose renderings extend each other).
- Packing puts whole conversations into rows (never split); `position_ids` restart at 0 with each
  conversation, which is what the decoder's per-document attention (`models/layers.document_mask`)
  keys on, so packed conversations do not attend to each other. Rows end in padding (mask 0).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np

ROLES = ("system", "user", "assistant", "tool")
IGNORE_INDEX = -100  # a label that is not a target (the loss skips it)

# For tokenizers without a template (forge trains its own): plain role markers, the assistant's turn
# ends with EOS so that generation stops there. Documented in docs/sft.md.
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|' + message['role'] + '|>\\n' }}"
    "{%- if message['content'] %}{{- message['content'] }}{%- endif %}"
    "{%- if message['tool_calls'] is defined and message['tool_calls'] %}"
    "{%- for call in message['tool_calls'] %}"
    "{{- '<tool_call>' + (call['function'] | tojson) + '</tool_call>' }}"
    "{%- endfor %}{%- endif %}"
    "{%- if message['role'] == 'assistant' %}{{- eos_token }}{%- else %}{{- '\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}"
)


class ChatRecordError(ValueError):
    """A record that is not a trainable conversation; `reason` is the quarantine reason."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


def _tool_calls(calls) -> list[dict]:
    if not isinstance(calls, list) or not calls:
        raise ChatRecordError("bad_tool_call", "tool_calls must be a non-empty list")
    out = []
    for c in calls:
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ChatRecordError("bad_tool_call", "a tool call needs function.name")
        args = fn.get("arguments", "{}")
        if not isinstance(args, str):
            args = json.dumps(args, sort_keys=True)
        out.append({"type": "function", "id": str(c.get("id", "")),
                    "function": {"name": fn["name"], "arguments": args}})
    return out


def check_messages(messages) -> list[dict]:
    """The conversation in a canonical form, or ChatRecordError naming what is wrong."""
    if not isinstance(messages, list) or not messages:
        raise ChatRecordError("empty_conversation", "messages must be a non-empty list")
    out: list[dict] = []
    open_calls = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ChatRecordError("bad_message", f"message {i} is not an object")
        role = m.get("role")
        if role not in ROLES:
            raise ChatRecordError("unknown_role", f"message {i} has role {role!r}; roles are {list(ROLES)}")
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise ChatRecordError("bad_content", f"message {i}: content must be a string")
        msg: dict = {"role": role, "content": content or ""}
        if role == "system" and i != 0:
            raise ChatRecordError("system_not_first", f"message {i}: a system turn must come first")
        if role == "assistant" and m.get("tool_calls") is not None:
            msg["tool_calls"] = _tool_calls(m["tool_calls"])
            open_calls = len(msg["tool_calls"])
        elif role == "tool":
            if open_calls == 0:
                raise ChatRecordError("tool_without_call", f"message {i}: a tool result without a tool call")
            open_calls -= 1
            if m.get("tool_call_id") is not None:
                msg["tool_call_id"] = str(m["tool_call_id"])
        if role != "tool" and not msg["content"] and not msg.get("tool_calls"):
            raise ChatRecordError("bad_content", f"message {i} ({role}) is empty")
        out.append(msg)
    if not any(m["role"] == "assistant" for m in out):
        raise ChatRecordError("no_assistant_turn", "no assistant turn to learn from")
    first = next(m["role"] for m in out if m["role"] != "system")
    if first != "user":
        raise ChatRecordError("no_user_turn_first", f"the first turn after the system prompt is {first!r}")
    return out


def conversation(record: dict, fmt: str, *, messages_field: str = "messages", prompt_field: str = "prompt",
                 completion_field: str = "completion", system_field: str | None = None
                 ) -> tuple[list[dict] | None, str]:
    """(messages, "") of a chat or instruction record, or (None, quarantine reason)."""
    try:
        if fmt == "chat":
            return check_messages(record.get(messages_field)), ""
        prompt, completion = record.get(prompt_field), record.get(completion_field)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ChatRecordError("no_prompt", f"field {prompt_field!r} must be a non-empty string")
        if not isinstance(completion, str) or not completion.strip():
            raise ChatRecordError("no_assistant_turn", f"field {completion_field!r} must be a non-empty string")
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        system = record.get(system_field) if system_field else None
        if isinstance(system, str) and system:
            msgs.insert(0, {"role": "system", "content": system})
        return check_messages(msgs), ""
    except ChatRecordError as e:
        return None, e.reason


def template_of(tokenizer) -> tuple[str, str]:
    """(template, "tokenizer" | "default"): the tokenizer's chat template, else forge's default."""
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # named templates: the default one
        own = own.get("default")
    return (own, "tokenizer") if own else (DEFAULT_CHAT_TEMPLATE, "default")


def render(tokenizer, template: str, messages: Sequence[dict], generation_prompt: bool = False) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(list(messages), chat_template=template, tokenize=False,
                                         add_generation_prompt=generation_prompt)


def render_segments(messages: Sequence[dict], tokenizer, template: str) -> list[tuple[str, bool]]:
    """The rendered conversation cut into (text, is_assistant) pieces; their concatenation is the
    whole rendering. ChatRecordError("template_not_incremental") for a template whose rendering of
    a prefix is not a prefix of the next (the spans could not be located)."""
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, m in enumerate(messages):
        full = render(tokenizer, template, messages[: i + 1])
        if m["role"] == "assistant":
            prompt = render(tokenizer, template, messages[:i], generation_prompt=True)
            if not prompt.startswith(done) or not full.startswith(prompt):
                raise ChatRecordError("template_not_incremental", f"turn {i}: the template rewrites earlier turns")
            if len(prompt) > len(done):
                pieces.append((prompt[len(done):], False))
            pieces.append((full[len(prompt):], True))
        else:
            if not full.startswith(done):
                raise ChatRecordError("template_not_incremental", f"turn {i}: the template rewrites earlier turns")
            pieces.append((full[len(done):], False))
        done = full
    return pieces


def render_masked(messages: Sequence[dict], tokenizer, template: str) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, loss mask) int32 / int8 [n]: mask 1 exactly on the assistant turns' tokens.
    Each piece is tokenized on its own, so a span's first and last tokens are its own."""
    ids: list[int] = []
    mask: list[int] = []
    for text, assistant in render_segments(messages, tokenizer, template):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        mask += [int(assistant)] * len(piece)
    return np.asarray(ids, np.int32), np.asarray(mask, np.int8)


def prompt_ids(messages: Sequence[dict], tokenizer, template: str) -> list[int]:
    """The token ids a model is asked to continue: the conversation and the generation prompt."""
    return tokenizer(render(tokenizer, template, messages, generation_prompt=True),
                     add_special_tokens=False)["input_ids"]


def pack_conversations(items: Iterable[tuple[np.ndarray, np.ndarray]], seq_len: int, pad_id: int
                       ) -> dict[str, np.ndarray]:
    """Whole conversations, in order, into rows of `seq_len` (a row is closed when the next one does
    not fit): {"input_ids", "position_ids", "loss_mask"} int32 / int32 / int8 [rows, seq_len] and
    "conversations" [rows]. Positions restart at 0 per conversation and per padding token.
    ValueError for a conversation longer than `seq_len` (the caller quarantines those first)."""
    rows_ids, rows_pos, rows_mask, rows_n = [], [], [], []
    cur_ids: list[np.ndarray] = []
    cur_mask: list[np.ndarray] = []
    used = 0

    def close():
        nonlocal used
        if not cur_ids:
            return
        pad = seq_len - used
        rows_ids.append(np.concatenate(cur_ids + [np.full(pad, pad_id, np.int32)]))
        rows_pos.append(np.concatenate([np.arange(len(x), dtype=np.int32) for x in cur_ids]
                                       + [np.zeros(pad, np.int32)]))
        rows_mask.append(np.concatenate(cur_mask + [np.zeros(pad, np.int8)]))
        rows_n.append(len(cur_ids))
        cur_ids.clear()
        cur_mask.clear()
        used = 0

    for ids, mask in items:
        if len(ids) > seq_len:
            raise ValueError(f"a conversation of {len(ids)} tokens does not fit a row of {seq_len}")
        if used + len(ids) > seq_len:
            close()
        cur_ids.append(np.asarray(ids, np.int32))
        cur_mask.append(np.asarray(mask, np.int8))
        used += len(ids)
    close()
    shape = (len(rows_ids), seq_len)
    return {
        "input_ids": np.stack(rows_ids) if rows_ids else np.zeros(shape, np.int32),
        "position_ids": np.stack(rows_pos) if rows_pos else np.zeros(shape, np.int32),
        "loss_mask": np.stack(rows_mask) if rows_mask else np.zeros(shape, np.int8),
        "conversations": np.asarray(rows_n, np.int64),
    }
