"""The storage root on a real S3-compatible server (SeaweedFS): files, atomic folders, the registry,
concurrent changes, node-local caches, bad settings, and secrets kept out of artefacts and logs."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time

import pytest

from forge_ray.errors import ConflictError, StorageError
from forge_ray.registry import Registry, RegistryError, publish_version
from forge_ray.registry.cache import cache_version
from forge_ray.storage import Storage
from forge_ray.testing.object_store import free_ports
from tests.s3_server import BUCKET
from tests.unit.test_registry import MANIFEST, fake_export
from tests.unit.test_registry_concurrency import VERSIONS, assert_consistent, churn


def test_files_folders_and_compare_and_swap(s3_root):
    storage = Storage(s3_root)
    assert storage.kind == "s3"
    storage.check_writable()
    storage.write_json("a/b.json", {"k": 1})
    assert storage.read_json("a/b.json") == {"k": 1} and storage.exists("a")
    with pytest.raises(StorageError, match="missing file"):
        storage.read_json("a/none.json")
    with pytest.raises(RuntimeError), storage.atomic_dir("d/v1") as work:
        storage.fs.pipe_file(f"{work}/part-0", b"half")
        raise RuntimeError("crash while writing")
    assert not storage.exists("d/v1/part-0") and not storage.is_complete("d/v1")
    with storage.atomic_dir("d/v1") as work:
        assert work == storage.path("d/v1")
        storage.fs.pipe_file(f"{work}/part-0", b"whole")
        assert not storage.is_complete("d/v1")  # visible only once marked
    assert storage.is_complete("d/v1") and storage.read_bytes("d/v1/part-0") == b"whole"
    with pytest.raises(StorageError, match="never overwritten"), storage.atomic_dir("d/v1"):
        pass
    tag = storage.write_if("p", b"1", None)
    with pytest.raises(ConflictError):
        storage.write_if("p", b"x", None)
    storage.write_if("p", b"2", tag)
    with pytest.raises(ConflictError):
        storage.write_if("p", b"3", tag)
    assert storage.read_bytes("p") == b"2"


def test_pyarrow_filesystem_reaches_the_same_objects(s3_root):
    import pyarrow as pa
    import pyarrow.parquet as pq

    storage = Storage(s3_root)
    pa_fs, path = storage.pyarrow_fs("t/x.parquet")
    pq.write_table(pa.table({"a": [1, 2, 3]}), path, filesystem=pa_fs)
    with storage.fs.open(storage.path("t/x.parquet"), "rb") as f:
        assert pq.read_table(f).column("a").to_pylist() == [1, 2, 3]


def test_registry_publish_promote_and_cache(s3_root, tmp_path):
    storage = Storage(s3_root)
    for i, v in enumerate(["v1", "v2"]):
        publish_version(storage, "m", v, fake_export(tmp_path, v, f"w{i}".encode()), MANIFEST)
    reg = Registry(storage, "m")
    assert reg.versions() == ["v1", "v2"] and reg.get("v1").url == f"{s3_root}/registry/m/v1"
    assert reg.promote("v1").generation == 1 and reg.promote("v2").generation == 2
    assert reg.rollback("bad").version == "v1" and reg.state("v2") == "rolled_back"
    reg.attach_report("v1", "eval", {"ok": True})
    assert reg.get("v1").reports == ["eval"] and reg.report("v1", "eval") == {"ok": True}
    with pytest.raises(RegistryError, match="already the promoted"):
        reg.promote("v1")
    assert not storage.exists("registry/m/.lock")
    path = cache_version(reg, "v1", str(tmp_path / "cache"))
    with open(os.path.join(path, "model.safetensors"), "rb") as f:
        assert f.read() == b"w0"


def test_concurrent_changes_from_processes(s3_root, tmp_path):
    storage = Storage(s3_root)
    for i, v in enumerate(VERSIONS):
        publish_version(storage, "m", v, fake_export(tmp_path, v, f"w{i}".encode()), MANIFEST)
    # spawn: each process builds its own client from the environment, as a Ray worker would.
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.starmap(churn, [(s3_root, seed, 8) for seed in range(3)])
    generations = [g for r in results for g in r]
    assert len(generations) > 6
    assert_consistent(Registry(storage, "m"), generations)


def bad_roots(s3_env) -> dict[str, tuple[dict, str]]:
    (closed,) = free_ports(1)
    return {
        "missing bucket": ({}, "does not exist"),
        "wrong secret": ({"AWS_SECRET_ACCESS_KEY": "not-the-secret-" + "y" * 20}, "access denied"),
        "unknown key": ({"AWS_ACCESS_KEY_ID": "nobody"}, "access denied"),
        "unreachable": ({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed}"}, "cannot reach"),
    }


@pytest.mark.parametrize("case", ["missing bucket", "wrong secret", "unknown key", "unreachable"])
def test_bad_settings_fail_up_front_naming_the_uri(s3_env, monkeypatch, case):
    env, expected = bad_roots(s3_env)[case]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    uri = "s3://no-such-bucket/p" if case == "missing bucket" else f"s3://{BUCKET}/p"
    start = time.monotonic()
    with pytest.raises(StorageError, match=expected) as e:
        Storage(uri).check_writable()
    assert uri in str(e.value) and time.monotonic() - start < 60
    for secret in (s3_env["AWS_SECRET_ACCESS_KEY"], os.environ["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in str(e.value)


def test_no_secret_in_artefacts_or_logs(s3_root, s3_env, tmp_path, caplog, monkeypatch):
    secret = s3_env["AWS_SECRET_ACCESS_KEY"]
    caplog.set_level(logging.DEBUG)  # botocore and s3fs included
    storage = Storage(s3_root)
    storage.check_writable()
    publish_version(storage, "m", "v1", fake_export(tmp_path, "v1"), MANIFEST)
    reg = Registry(storage, "m")
    reg.promote("v1")
    reg.attach_report("v1", "eval", {"ok": True})
    cache_version(reg, "v1", str(tmp_path / "cache"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(StorageError) as e:
        Storage(s3_root).check_writable()
    written = {p: storage.fs.cat_file(p) for p in storage.fs.find(storage.root)}
    assert len(written) > 5
    leaks = [p for p, data in written.items() if secret.encode() in data]
    cached = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "cache") for f in fs]
    leaks += [p for p in cached if secret.encode() in open(p, "rb").read()]
    assert leaks == [], f"the secret key was written to {leaks}"
    assert caplog.records and secret not in caplog.text and secret not in str(e.value)


@pytest.mark.parametrize("command", ["validate", "train", "prepare"])
def test_commands_refuse_a_missing_bucket_before_any_work(s3_env, command, capsys):
    from forge_ray.cli.main import main
    from tests.conftest import DEMO_CONFIG

    uri = "s3://no-such-bucket/forge"
    extra = ["--check-storage"] if command == "validate" else []
    start = time.monotonic()
    code = main([command, "-c", str(DEMO_CONFIG), "--set", f"project.storage_root={uri}", *extra])
    err = capsys.readouterr().err
    assert code != 0 and uri in err and "does not exist" in err, err
    assert time.monotonic() - start < 60 and s3_env["AWS_SECRET_ACCESS_KEY"] not in err


def test_validate_checks_the_uris_a_forge_file_names(s3_root, capsys):
    from forge_ray.cli.main import main
    from tests.conftest import DEMO_CONFIG

    Storage(s3_root).write_bytes("suites/a.yaml", b"name: a\n")
    args = ["validate", "-c", str(DEMO_CONFIG), "--check-storage", "--set", f"project.storage_root={s3_root}",
            "--set", f"model.init_from={s3_root}/no-such-model", "--set", f"eval.suites=[{s3_root}/suites/a.yaml]"]
    code = main(args)
    err = capsys.readouterr().err
    assert code != 0 and f"model.init_from: nothing at {s3_root}/no-such-model" in err and "eval.suites" not in err, err
