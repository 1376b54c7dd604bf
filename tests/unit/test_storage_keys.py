"""The demo's generated API key stays on the storage root, whatever its filesystem."""

from __future__ import annotations

import os
import stat
import uuid

import pytest

from forge_ray.config import load_config
from forge_ray.serve.auth import read_keys
from forge_ray.serve.demo import demo_keys
from forge_ray.storage import Storage
from tests.conftest import DEMO_CONFIG


@pytest.fixture(autouse=True)
def _no_configured_keys(monkeypatch):
    monkeypatch.delenv("FORGE_API_KEYS", raising=False)


def test_a_local_root_gets_a_private_file(tmp_path):
    config, key = demo_keys(load_config(DEMO_CONFIG, [f"project.storage_root={tmp_path}"]))
    path = config.serve.auth.api_keys_file
    assert path == str(tmp_path / "secrets" / "api_keys") and key.startswith("forge-")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert demo_keys(load_config(DEMO_CONFIG, [f"project.storage_root={tmp_path}"]))[1] == key  # reused


def test_a_remote_root_keeps_the_key_on_the_store_and_nothing_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = f"memory://keys-{uuid.uuid4().hex[:8]}"
    config, key = demo_keys(load_config(DEMO_CONFIG, [f"project.storage_root={root}"]))
    assert config.serve.auth.api_keys_file == Storage(root).url("secrets/api_keys")
    assert Storage(root).read_bytes("secrets/api_keys").decode().strip() == key
    assert read_keys("FORGE_API_KEYS", config.serve.auth.api_keys_file) == [key]  # as a replica reads it
    assert list(tmp_path.iterdir()) == []
    again, same = demo_keys(load_config(DEMO_CONFIG, [f"project.storage_root={root}"]))
    assert same == key
