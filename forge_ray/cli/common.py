"""Arguments and start-up shared by the subcommands."""

from __future__ import annotations

import argparse
import logging
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
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # Third-party loggers that would drown forge's own lines at INFO.
    for name in ("urllib3", "filelock", "fsspec", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)
