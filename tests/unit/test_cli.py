"""The `forge` CLI as a user runs it: a real subprocess, exit codes and messages."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import DEMO_CONFIG, REPO


def forge(*args: str, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "forge_ray.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_help_lists_subcommands():
    out = forge("--help")
    assert out.returncode == 0
    for command in ("validate", "demo"):
        assert command in out.stdout


def test_validate_demo_prints_resolved_config():
    out = forge("validate", "-c", str(DEMO_CONFIG))
    assert out.returncode == 0, out.stderr
    assert "storage_root: ./forge_data/demo" in out.stdout
    assert "object_store_mb: 1024" in out.stdout  # defaults are shown resolved


def test_validate_bad_file_exits_2_and_names_both_fields(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO_CONFIG.read_text().replace("  seq_len: 256", "  seq_len: long\n  colour: red"))
    out = forge("validate", "-c", str(bad))
    assert out.returncode == 2
    assert "prepare.seq_len" in out.stderr and "prepare.colour: unknown key" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_config_is_a_message_not_a_traceback(tmp_path):
    out = forge("validate", "-c", str(tmp_path / "none.yaml"))
    assert out.returncode == 2
    assert "config file not found" in out.stderr and "Traceback" not in out.stderr


def test_unwritable_storage_root_is_reported_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = forge("demo", "-c", str(DEMO_CONFIG), "--set", f"project.storage_root={blocker}/root")
    assert out.returncode == 2
    assert "cannot be written" in out.stderr and "Traceback" not in out.stderr


def test_jobs_module_runs_from_repo_root():
    out = subprocess.run(
        [sys.executable, "-m", "jobs.demo", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "--config" in out.stdout


def test_a_command_joins_the_given_cluster_else_starts_its_own(monkeypatch):
    from forge_ray.cluster import given_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert given_address(None) is None and given_address("") is None  # local: stops with the command
    assert given_address("10.0.0.5:6379") == "10.0.0.5:6379"
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert given_address(None) == "head:6379"
    assert given_address("other:6379") == "other:6379"  # --address wins over the environment
