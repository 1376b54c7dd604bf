"""The Ray Serve deployments: swap watcher, and model replicas (one vLLM engine each) that are also
the HTTP ingress.

They hold no logic of their own: SwapCoordinator, ModelReplica and Frontend do the work.
"""

from __future__ import annotations

import asyncio
import logging

from ray import serve

from forge_ray.config.serve import ServeConfig
from forge_ray.errors import ForgeError
from forge_ray.registry import Registry
from forge_ray.serve import metrics
from forge_ray.serve.auth import KeyChecker
from forge_ray.serve.contracts import SwapResult, Target, WatcherStatus
from forge_ray.serve.coordinator import SwapCoordinator
from forge_ray.serve.frontend import Frontend
from forge_ray.serve.replica import ModelReplica
from forge_ray.serve.vllm_engine import VLLMEngine

log = logging.getLogger(__name__)
FOLLOW_WAIT_S = 5.0   # a replica's long poll of the watcher returns at least this often (a heartbeat)
RETRY_S = 0.5         # wait before asking again when another replica holds the swap lease, or on error


# No access log for the watcher: every replica long-polls it.
@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000,
                  logging_config={"enable_access_log": False})
class SwapWatcher:
    async def __init__(self, storage_uri: str, model: str, cfg_json: str):
        cfg = ServeConfig.model_validate_json(cfg_json)
        self.coord = SwapCoordinator(Registry(storage_uri, model), cfg.swap)
        self._task = asyncio.get_running_loop().create_task(self.coord.run())

    def target(self) -> Target:
        return self.coord.target_version()

    def acquire(self, replica_id: str, version: str) -> bool:
        return self.coord.acquire(replica_id, version)

    def report(self, replica_id: str, result: SwapResult) -> None:
        self.coord.report(replica_id, result)

    async def follow(self, replica_id: str, version: str | None) -> Target:
        return await self.coord.follow(replica_id, version, FOLLOW_WAIT_S)

    def status(self) -> WatcherStatus:
        return self.coord.status()

    async def admin(self, action: str, body: dict) -> WatcherStatus | dict:
        """reload | promote {"version"} | rollback {"reason", "to"} | status; returns the status, or
        {"error"} (a 400 at the front)."""
        reg = self.coord.registry
        try:
            if action == "promote":
                await asyncio.to_thread(reg.promote, str(body.get("version")), reason="admin API")
            elif action == "rollback":
                await asyncio.to_thread(reg.rollback, str(body.get("reason", "admin API")), body.get("to"))
            if action != "status":
                await asyncio.to_thread(self.coord.check)
        except ForgeError as e:
            return {"error": str(e)}
        return self.coord.status()


@serve.deployment
class ModelServer:
    """A model replica, and the HTTP ingress of the app: the Frontend (auth, validation, OpenAI JSON
    and SSE) runs in the process that holds the engine, so a request crosses no deployment boundary
    between HTTP and vLLM (Serve's proxy routes it straight to a replica). The watcher stays a
    separate deployment."""

    async def __init__(self, storage_uri: str, model: str, cfg_json: str, watcher):
        cfg = ServeConfig.model_validate_json(cfg_json)
        keys = KeyChecker.from_config(cfg.auth)  # no API key configured: refuse before loading anything
        self.watcher = watcher
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.replica = ModelReplica(cfg, Registry(storage_uri, model), self.replica_id, engine_cls=VLLMEngine)
        self.front = Frontend(
            cfg, model, keys, openai_fn=self.replica.openai,
            status_fn=lambda: watcher.status.remote(),
            admin_fn=lambda action, body: watcher.admin.remote(action, body),
        )
        self.retry_s = cfg.swap.retry_s
        target = await watcher.target.remote()
        await self.replica.load(target["version"])
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        """Follow the watcher's target: swap when it differs and this replica holds the lease.

        A Serve handle call costs milliseconds of CPU in this process and the watcher's, taken from
        the engine on a small node: so a long poll, not a poll several times a second. A transient
        failure (drain timeout, no room, storage) is retried after a backoff that doubles up to 5 min."""
        failures = 0
        while self.replica.current is not None:
            try:
                version = self.replica.version
                target = (await self.watcher.follow.remote(self.replica_id, version))["version"]
                metrics.version_served(self.replica_id, None, version)  # keep the gauge fresh
                if target and target != version:
                    if await self.watcher.acquire.remote(self.replica_id, target):
                        result = await self.replica.swap(target)
                        await self.watcher.report.remote(self.replica_id, result)
                        if result.ok:
                            failures = 0
                            continue
                        if result.transient:
                            failures += 1
                            await asyncio.sleep(min(self.retry_s * 2 ** (failures - 1), 300.0))
                            continue
                    await asyncio.sleep(RETRY_S)  # another replica is swapping, or this swap failed
            except Exception:  # noqa: BLE001 - keep following; serving goes on meanwhile
                log.exception("replica %s: follow loop", self.replica_id)
                await asyncio.sleep(RETRY_S)

    async def __call__(self, request):
        return await self.front.handle(request)

    def check_health(self) -> None:
        current = self.replica.current
        if current is None or current.engine.errored:
            raise RuntimeError(f"engine of replica {self.replica_id} is not running")

    def __del__(self):
        self._task.cancel()
        self.replica.close()
