"""`forge validate -c FILE`: print the resolved config, or every problem (exit 2)."""

from __future__ import annotations

import argparse

from forge_ray.cli.common import add_config_args
from forge_ray.config import dump_config, load_config

HELP = "check a forge file and print the resolved config (exit 2 on errors)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help=HELP, description=HELP)
    add_config_args(p, address=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    print(dump_config(config), end="")
    return 0
