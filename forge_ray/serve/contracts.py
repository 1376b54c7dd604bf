"""What crosses the serve room's joints, typed: the request the front hands a replica, the events a
replica streams back, a replica's swap result, and the swap watcher's records.

    Frontend --GenerateRequest--> ModelReplica.generate --StreamEvent...--> Frontend
    ModelReplica.swap -> SwapResult --(Serve handle)--> SwapCoordinator.report
    SwapCoordinator.status() -> WatcherStatus (JSON: /admin/status, `status()`, `wait_for_version`)

Events and records are TypedDicts: at run time plain dicts (JSON-ready, picklable across a Serve
handle, what the HTTP front and the admin API return), with key paths a type checker can follow.
SwapResult is a dataclass: a value the replica builds and the watcher reads, never JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict


class Sampling(TypedDict, total=False):
    """Arguments of vllm.SamplingParams (`protocol._Sampling.sampling` builds them)."""

    max_tokens: int
    temperature: float
    top_p: float
    presence_penalty: float
    frequency_penalty: float
    seed: int | None
    stop: list[str]
    ignore_eos: bool            # canaries only: their recorded tokens ignore end-of-sequence


class GenerateRequest(TypedDict, total=False):
    """One validated request, as the front hands it to the replica: `messages` for chat, else `prompt`."""

    kind: Literal["completion", "chat"]
    stream: bool
    sampling: Sampling
    messages: list[dict[str, str]]          # [{"role", "content"}]
    prompt: str | list[int]                  # text, or token ids


class StartEvent(TypedDict):
    """First event of an accepted request: the version that answers it."""

    type: Literal["start"]
    version: str
    prompt_tokens: int


class DeltaEvent(TypedDict):
    """New text and tokens (streamed: one per engine step; not streamed: one with everything)."""

    type: Literal["delta"]
    text: str
    token_ids: list[int]
    finish_reason: str | None


class ErrorEvent(TypedDict):
    """The only event of a request refused before generation (an OpenAI error body and its status)."""

    type: Literal["error"]
    status: int
    body: dict


StreamEvent = StartEvent | DeltaEvent | ErrorEvent


@dataclass(frozen=True)
class SwapResult:
    """One replica's swap attempt. Crosses a Serve handle (replica -> watcher): plain values only."""

    ok: bool
    path: Literal["in_place", "surge"]
    detail: str                 # the canary summary, or the error
    seconds: float
    from_version: str
    to_version: str
    serving: str | None         # the version the replica serves after the attempt


class Target(TypedDict):
    """The version every replica should serve, and the promoted pointer's generation it came from."""

    version: str | None
    generation: int


class ReplicaRecord(TypedDict):
    """A replica's last heartbeat (a `follow` or a swap lease)."""

    version: str | None
    swapping: bool
    seen: float                 # time.time()


class WatcherEvent(TypedDict):
    """target | refused | swapped | swap_failed, with the version and a sentence."""

    time: float                 # time.time()
    event: str
    version: str | None
    detail: str


class WatcherStatus(TypedDict):
    """The swap watcher's view (`SwapCoordinator.status`, the one place it is built)."""

    model: str
    target: str | None
    generation: int
    replicas: dict[str, ReplicaRecord]      # heard from in the last 30 s
    events: list[WatcherEvent]              # the latest 20, oldest first
