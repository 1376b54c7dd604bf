"""One registry change at a time, across processes and nodes.

- Local roots: `flock` on a lock file (released by the kernel when a holder dies).
- Object stores: a lock object created only if absent (S3 If-None-Match), holding an owner id
  and a lease expiry. A holder that died leaves it behind; once its lease is over, the next
  writer takes it over with a compare-and-swap on its ETag, so two cannot both take it over.
  Clocks of the nodes must agree to well within the lease (60 s by default).

The lock serialises the read-modify-write of states and pointer; the pointer itself is also
written with compare-and-swap, so even a holder whose lease ran out (a stalled process) cannot
overwrite a newer pointer or repeat a generation number.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import time
import uuid
from collections.abc import Iterator

from forge_ray.errors import ConflictError
from forge_ray.storage import Storage

LEASE_S = 60.0
WAIT_S = 60.0


@contextlib.contextmanager
def registry_lock(storage: Storage, rel: str, *, lease_s: float = LEASE_S, wait_s: float = WAIT_S) -> Iterator[None]:
    if storage.is_local:
        with _flock(storage.path(rel)):
            yield
    else:
        with _object_lock(storage, rel, lease_s, wait_s):
            yield


@contextlib.contextmanager
def _flock(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _object_lock(storage: Storage, rel: str, lease_s: float, wait_s: float) -> Iterator[None]:
    owner = uuid.uuid4().hex
    tag = _acquire(storage, rel, owner, lease_s, wait_s)
    try:
        yield
    finally:
        # Only our own lock goes: if our lease ran out and another took it over, its tag differs.
        storage.delete_if(rel, tag)


def _acquire(storage: Storage, rel: str, owner: str, lease_s: float, wait_s: float) -> str:
    deadline = time.monotonic() + wait_s
    delay = 0.02
    while True:
        body = json.dumps({"owner": owner, "pid": os.getpid(), "expires": time.time() + lease_s}).encode()
        try:
            return storage.write_if(rel, body, None)
        except ConflictError:
            pass
        held = storage.read_tagged(rel)
        if held is not None and _expired(held[0]):
            with contextlib.suppress(ConflictError):
                return storage.write_if(rel, body, held[1])  # take over a dead holder's lock
        if time.monotonic() > deadline:
            raise ConflictError(f"{storage.url(rel)} is held by another registry change for over "
                                f"{wait_s:.0f} s; try again (a dead holder's lock expires after {lease_s:.0f} s)")
        time.sleep(delay * (1 + random.random()))  # jitter: waiters do not retry in lockstep
        delay = min(delay * 2, 0.5)


def _expired(raw: bytes) -> bool:
    try:
        return float(json.loads(raw)["expires"]) < time.time()
    except (ValueError, KeyError, TypeError):
        return True  # unreadable: a torn or foreign object, treat as stale
