"""The model registry: versions of one model under `<storage_root>/registry/<model>/`.

    registry/<model>/<version>/            the exported folder (immutable; see publish.py)
    registry/<model>/_state/<version>.json its state and the history of its state changes
    registry/<model>/_reports/<version>/<name>.json   reports attached later (eval)
    registry/<model>/PROMOTED              {"version", "generation", "history": [...]}

States: candidate -> promoted -> rolled_back, or candidate -> rejected. The PROMOTED pointer is
replaced atomically (a rename locally, one PUT on an object store) and its generation grows by one
at every change, so a watcher sees "something changed" by comparing one integer. A version that was
promoted and then replaced by a newer one stays "promoted": it is a valid rollback target.
Changes (promote, reject, rollback) are serialised by `lock.registry_lock` (flock locally, a lock
object with a lease on object stores), and the pointer is written with compare-and-swap on top,
so concurrent changes from any number of processes or nodes never lose an update or repeat a
generation number.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any

from forge_ray.errors import ConflictError, ForgeError
from forge_ray.registry.checksums import MANIFEST, verify_checksums
from forge_ray.registry.lock import registry_lock
from forge_ray.storage import Storage, dump_json

STATES = ("candidate", "promoted", "rejected", "rolled_back")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
POINTER = "PROMOTED"
LOCK = ".lock"  # a file locally, an object with a lease on object stores


class RegistryError(ForgeError):
    """A registry action that cannot be done (unknown version, wrong state, nothing to roll back to)."""


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Pointer:
    """The promoted pointer: which version serves, and a counter that grows at every change."""

    version: str | None
    generation: int
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class VersionInfo:
    model: str
    version: str
    state: str
    manifest: dict[str, Any]
    url: str          # fsspec URI of the version folder
    history: list[dict]
    reports: list[str]

    @property
    def architecture(self) -> str:
        return self.manifest.get("architecture", "?")

    @property
    def created(self) -> str:
        return self.manifest.get("created", "")


class Registry:
    """The versions of `model` in `storage`; see the module docstring for the layout."""

    def __init__(self, storage: Storage | str, model: str):
        self.storage = storage if isinstance(storage, Storage) else Storage(storage)
        if not VERSION_PATTERN.match(model):
            raise RegistryError(f"bad model name {model!r}")
        self.model = model

    # -- paths ---------------------------------------------------------------------------------
    def rel(self, *parts: str) -> str:
        return "/".join(["registry", self.model, *parts])

    def version_path(self, version: str) -> str:
        """The version's folder as another process opens it: a path on a local root, else a URI."""
        return self.storage.location(self.rel(version))

    # -- reading -------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        """Complete versions, oldest first (by manifest `created`, then name)."""
        fs, base = self.storage.fs, self.storage.path(self.rel())
        if not fs.exists(base):
            return []
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False)]
        names = [n for n in names if VERSION_PATTERN.match(n) and n != POINTER and ".tmp-" not in n]
        complete = [n for n in names if self.storage.is_complete(self.rel(n))]
        return sorted(complete, key=lambda n: (self.manifest(n).get("created", ""), n))

    def manifest(self, version: str) -> dict[str, Any]:
        self._check_exists(version)
        return self.storage.read_json(self.rel(version, MANIFEST))

    def state(self, version: str) -> str:
        return self._state_record(version)["state"]

    def get(self, version: str) -> VersionInfo:
        record = self._state_record(version)
        reports_dir = self.storage.path(self.rel("_reports", version))
        fs = self.storage.fs
        reports = sorted(
            p.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json")
            for p in (fs.ls(reports_dir, detail=False) if fs.exists(reports_dir) else [])
        )
        return VersionInfo(
            model=self.model,
            version=version,
            state=record["state"],
            manifest=self.manifest(version),
            url=self.storage.url(self.rel(version)),
            history=record["history"],
            reports=reports,
        )

    def list(self) -> list[VersionInfo]:
        return [self.get(v) for v in self.versions()]

    def pointer(self) -> Pointer:
        return self._read_pointer()[0]

    def promoted(self) -> str | None:
        """The version the endpoint should serve, or None before the first promotion."""
        return self.pointer().version

    def report(self, version: str, name: str) -> dict:
        return self.storage.read_json(self.rel("_reports", version, f"{name}.json"))

    def verify(self, version: str) -> None:
        """Raise CorruptVersionError unless every file matches the manifest's checksums."""
        verify_checksums(self.storage.fs, self.version_path(version), self.manifest(version).get("files", {}))

    # -- changing ------------------------------------------------------------------------------
    def promote(self, version: str, *, reason: str = "", verify: bool = True) -> Pointer:
        """Point the endpoint at `version` (a candidate, or an earlier promoted / rolled back one)."""
        with self._lock():
            state = self.state(version)
            if state == "rejected":
                raise RegistryError(f"{self.model}/{version} was rejected; it cannot be promoted")
            current, tag = self._read_pointer()
            if current.version == version:
                raise RegistryError(f"{self.model}/{version} is already the promoted version")
            if verify:
                self.verify(version)
            self._set_state(version, "promoted", reason or "promoted")
            return self._move_pointer(current, tag, version, "promote", reason)

    def reject(self, version: str, reason: str) -> Pointer:
        """Mark `version` rejected; if it is the promoted one, the pointer goes back to the previous."""
        with self._lock():
            self._set_state(version, "rejected", reason)
            current, tag = self._read_pointer()
            if current.version != version:
                return current
            return self._move_pointer(current, tag, self._previous_good(current, version), "reject", reason)

    def rollback(self, reason: str = "", to: str | None = None) -> Pointer:
        """The promoted version becomes rolled_back; the pointer goes to `to` or the previous one."""
        with self._lock():
            current, tag = self._read_pointer()
            if current.version is None:
                raise RegistryError(f"{self.model}: no promoted version to roll back")
            target = to or self._previous_good(current, current.version)
            if target is None:
                raise RegistryError(f"{self.model}: no earlier promoted version to roll back to")
            if self.state(target) == "rejected":
                raise RegistryError(f"{self.model}/{target} was rejected; cannot roll back to it")
            self._set_state(current.version, "rolled_back", reason or "rolled back")
            self._set_state(target, "promoted", f"rollback target of {current.version}")
            return self._move_pointer(current, tag, target, "rollback", reason)

    def attach_report(self, version: str, name: str, report: dict) -> str:
        """Store a report (e.g. the eval report) with a version; returns its URI."""
        self._check_exists(version)
        if not VERSION_PATTERN.match(name):
            raise RegistryError(f"bad report name {name!r}")
        rel = self.rel("_reports", version, f"{name}.json")
        self.storage.write_json(rel, report)
        return self.storage.url(rel)

    def init_state(self, version: str) -> None:
        """Record a newly published version as a candidate (called by publish_version)."""
        self._write_state(version, {"state": "candidate", "history": [
            {"state": "candidate", "time": now(), "reason": "published"}]})

    # -- internals -----------------------------------------------------------------------------
    def _check_exists(self, version: str) -> None:
        if not VERSION_PATTERN.match(version) or not self.storage.is_complete(self.rel(version)):
            known = ", ".join(self.versions()) or "none"
            raise RegistryError(f"{self.model}: no version {version!r} (versions: {known})")

    def _state_record(self, version: str) -> dict:
        self._check_exists(version)
        rel = self.rel("_state", f"{version}.json")
        if not self.storage.exists(rel):
            return {"state": "candidate", "history": []}
        return self.storage.read_json(rel)

    def _write_state(self, version: str, record: dict) -> None:
        self.storage.write_json(self.rel("_state", f"{version}.json"), record)

    def _set_state(self, version: str, state: str, reason: str) -> None:
        record = self._state_record(version)
        record["state"] = state
        record["history"].append({"state": state, "time": now(), "reason": reason})
        self._write_state(version, record)

    def _previous_good(self, current: Pointer, leaving: str) -> str | None:
        """The most recent earlier pointer target that is still promoted (not rejected/rolled back)."""
        for entry in reversed(current.history):
            v = entry.get("version")
            if v and v != leaving and self.state(v) == "promoted":
                return v
        return None

    def _read_pointer(self) -> tuple[Pointer, str | None]:
        """The pointer and its tag for a compare-and-swap (None: no pointer yet)."""
        got = self.storage.read_tagged(self.rel(POINTER))
        if got is None:
            return Pointer(None, 0, []), None
        raw = json.loads(got[0])
        return Pointer(raw["version"], int(raw["generation"]), raw.get("history", [])), got[1]

    def _move_pointer(self, current: Pointer, tag: str | None, version: str | None, action: str,
                      reason: str) -> Pointer:
        generation = current.generation + 1
        entry = {"generation": generation, "version": version, "action": action,
                 "reason": reason, "time": now()}
        history = [*current.history, entry]
        body = dump_json({"version": version, "generation": generation, "history": history})
        try:
            self.storage.write_if(self.rel(POINTER), body, tag)
        except ConflictError:
            # Only a lock holder whose lease ran out gets here; the newer pointer stands.
            raise RegistryError(f"{self.model}: the promoted pointer changed during this {action}; "
                                "check `forge registry list` and try again") from None
        return Pointer(version, generation, history)

    def _lock(self):
        return registry_lock(self.storage, self.rel(LOCK))
