"""Arguments and start-up shared by the subcommands."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from forge_ray.config import ForgeConfig, load_config
from forge_ray.storage import Storage


def add_config_args(p: argparse.ArgumentParser, *, address: bool = True) -> None:
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="the forge file (YAML)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one field, e.g. --set train.steps=20 (repeatable)",
    )
    if address:
        p.add_argument(
            "--address",
            default=None,
            help="Ray cluster address (default: RAY_ADDRESS, else start a local cluster)",
        )


def load(args: argparse.Namespace, *, check_storage: bool = True) -> ForgeConfig:
    """Load the forge file; fail before any work if the storage root cannot be written."""
    config = load_config(args.config, args.overrides)
    if check_storage:
        Storage(config.project.storage_root).check_writable()
    return config


def setup_logging(verbose: bool = False) -> None:
    """forge's own loggers at INFO (DEBUG with -v). At default verbosity the engines' loggers
    (Ray, Ray Data, DeepSpeed, vLLM, ...) write to a file instead (`forge_ray.console`): `connect`
    routes them once Ray is up and prints where; `-v` leaves them on the terminal."""
    from forge_ray import console

    console.set_verbose(verbose)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if not verbose:
        # Ray Data sets up its logger (a console handler) when first imported, possibly after
        # `connect`: give it a configuration with its session log file only.
        os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", _ray_data_file_only_config())
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars
    # Third-party loggers that would drown forge's own lines at INFO.
    for name in ("urllib3", "filelock", "fsspec", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _ray_data_file_only_config() -> str:
    """A Ray Data logging configuration (YAML) that writes its session file `ray-data.log` only."""
    from forge_ray.cluster import private_dir

    # In a folder only this user can write: Ray Data imports and calls the classes the file names.
    path = os.path.join(private_dir("logging"), "ray-data-logging.yaml")
    text = (
        "version: 1\ndisable_existing_loggers: false\n"
        "formatters:\n  ray:\n    format: '%(asctime)s\\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s'\n"
        "handlers:\n  file:\n    class: ray.data._internal.logging.SessionFileHandler\n"
        "    formatter: ray\n    filename: ray-data.log\n"
        "loggers:\n  ray.data:\n    level: DEBUG\n    handlers: [file]\n    propagate: false\n"
    )
    if not os.path.exists(path) or open(path).read() != text:
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return path
