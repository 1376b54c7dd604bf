"""What crosses the serve room's joints, typed: what the OpenAI layer answers a request, a replica's
swap result, and the swap watcher's records.

    Frontend --(route, JSON body)--> ModelReplica.openai -> OpenAIReply --> Frontend
    ModelReplica.swap -> SwapResult --(Serve handle)--> SwapCoordinator.report
    SwapCoordinator.status() -> WatcherStatus (JSON: /admin/status, `status()`, `wait_for_version`)

The watcher's records are TypedDicts: at run time plain dicts (JSON-ready, picklable across a Serve
handle, what the admin API returns), with key paths a type checker can follow. SwapResult and
OpenAIReply are dataclasses: values one side builds and the other reads, never JSON themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, TypedDict


class Sampling(TypedDict, total=False):
    """Arguments of vllm.SamplingParams for the engine's own requests (the canaries)."""

    max_tokens: int
    temperature: float
    top_p: float
    presence_penalty: float
    frequency_penalty: float
    seed: int | None
    stop: list[str]
    ignore_eos: bool            # canaries only: their recorded tokens ignore end-of-sequence


@dataclass
class OpenAIReply:
    """What the OpenAI layer answered one request: a JSON body with its status, or (streamed) the
    server-sent events as ready `data: ...` lines. `version` names the weights that answered."""

    status: int
    body: dict | None = None
    stream: AsyncIterator[str] | None = None
    version: str = ""


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
    transient: bool = False     # failed for a reason that is not the version's: retried, stays promotable


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
