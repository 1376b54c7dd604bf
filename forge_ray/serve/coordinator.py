"""The swap watcher: notices a new promoted version, verifies it, and lets replicas swap one at a time.

Replicas pull: each long-polls `follow()` (it answers when the target differs from the replica's
version, or after a few seconds as a heartbeat), asks for the single swap lease with `acquire()`,
swaps, and `report()`s. A version whose files do not match its checksums is refused here (marked rejected,
so the pointer goes back) before any replica touches it; a version that fails a replica's canary
check is rejected on that report, and the target goes back to what the replicas still serve. A swap
that failed for a transient reason (drain timeout, no room for a surge engine, storage error) leaves
the version the target; the replica retries.
"""

from __future__ import annotations

import asyncio
import logging
import time

from forge_ray.config.serve import SwapConfig
from forge_ray.errors import ForgeError
from forge_ray.registry import CorruptVersionError, Registry
from forge_ray.serve import metrics
from forge_ray.serve.contracts import ReplicaRecord, SwapResult, Target, WatcherEvent, WatcherStatus

log = logging.getLogger(__name__)

LEASE_TIMEOUT_S = 900.0  # a replica that died mid-swap must not block the others forever
FOLLOW_TICK_S = 0.05     # how often a waiting follow() looks at the target (in memory, no I/O)


class SwapCoordinator:
    def __init__(self, registry: Registry, cfg: SwapConfig):
        self.registry, self.cfg = registry, cfg
        pointer = registry.pointer()
        if pointer.version is None:
            raise ForgeError(f"model {registry.model!r} has no promoted version; promote one first "
                             f"(forge registry promote -c FILE VERSION)")
        registry.verify(pointer.version)
        self.target, self.generation = pointer.version, pointer.generation
        self.lease: tuple[str, float] | None = None
        self.replicas: dict[str, ReplicaRecord] = {}
        self.events: list[WatcherEvent] = []

    def _event(self, kind: str, version: str | None, detail: str) -> None:
        self.events.append(WatcherEvent(time=time.time(), event=kind, version=version, detail=detail))
        del self.events[:-50]
        log.info("swap watcher: %s %s: %s", kind, version, detail)

    def check(self) -> None:
        """One poll of the promoted pointer (cheap: one small file). The generation is taken as seen
        only once the promotion is handled: a read that fails half-way (storage error) is retried
        on the next poll, never skipped."""
        pointer = self.registry.pointer()
        if pointer.generation == self.generation:
            return
        if pointer.version is not None and pointer.version != self.target:
            try:
                self.registry.verify(pointer.version)
            except CorruptVersionError as e:
                self._event("refused", pointer.version, str(e))
                self.generation = self.registry.reject(
                    pointer.version, f"refused by the swap watcher: {e}").generation
                return
            self._event("target", pointer.version, f"promoted, generation {pointer.generation}")
            self.target = pointer.version
        self.generation = pointer.generation

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.check)
            except Exception:  # noqa: BLE001 - a storage hiccup must not stop the watcher
                log.exception("swap watcher poll failed")
            await asyncio.sleep(self.cfg.watch_interval_s)

    def target_version(self) -> Target:
        return Target(version=self.target, generation=self.generation)

    async def follow(self, replica_id: str, version: str | None, wait_s: float) -> Target:
        """A replica's long poll: records its heartbeat, then returns the target as soon as it
        differs from `version`, or after `wait_s`. One call per replica every few seconds, instead
        of several a second, and a promotion reaches the replicas within FOLLOW_TICK_S."""
        self.heartbeat(replica_id, version, False)
        deadline = time.monotonic() + wait_s
        while self.target == version and time.monotonic() < deadline:
            await asyncio.sleep(FOLLOW_TICK_S)
        return self.target_version()

    def acquire(self, replica_id: str, version: str) -> bool:
        """The swap lease: one replica swaps at a time, and only to the current target."""
        now = time.monotonic()
        if version != self.target:
            return False
        if self.lease and self.lease[0] != replica_id and now - self.lease[1] < LEASE_TIMEOUT_S:
            return False
        self.lease = (replica_id, now)
        known = self.replicas.get(replica_id)
        self.heartbeat(replica_id, known["version"] if known else None, True)
        return True

    def report(self, replica_id: str, result: SwapResult) -> None:
        if self.lease and self.lease[0] == replica_id:
            self.lease = None
        self.heartbeat(replica_id, result.serving, False)
        metrics.swap_done(result.path, "ok" if result.ok else "retry" if result.transient else "failed",
                          result.seconds)
        kind = "swapped" if result.ok else "swap_retry" if result.transient else "swap_failed"
        self._event(kind, result.to_version, f"{replica_id} {result.path} in {result.seconds:.2f}s: {result.detail}")
        if result.transient:    # not the version's fault: it stays the target and promotable
            return
        if not result.ok and self.registry.state(result.to_version) != "rejected":
            pointer = self.registry.reject(result.to_version, f"swap check failed on replica {replica_id}: "
                                                              f"{result.detail}")
            self.generation = pointer.generation
            self.target = pointer.version or result.serving

    def heartbeat(self, replica_id: str, version: str | None, swapping: bool) -> None:
        self.replicas[replica_id] = ReplicaRecord(version=version, swapping=swapping, seen=time.time())

    def status(self) -> WatcherStatus:
        """The one place the watcher's status is built: a plain dict (JSON for /admin/status, and
        what `serve.status()` and `wait_for_version` read)."""
        alive = {r: s for r, s in self.replicas.items() if time.time() - s["seen"] < 30}
        return WatcherStatus(model=self.registry.model, target=self.target, generation=self.generation,
                             replicas=alive, events=self.events[-20:])
