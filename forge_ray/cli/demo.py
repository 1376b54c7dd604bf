"""`forge demo -c FILE`: run the pipeline on the embedded default corpora, end to end."""

from __future__ import annotations

import argparse

from forge_ray.cli.common import add_config_args, load

HELP = "run the whole pipeline on the embedded default data and say what it did"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help=HELP, description=HELP)
    add_config_args(p)
    p.add_argument(
        "--scale", type=float, default=1.0, help="size of the embedded corpora, (0, 1] (default 1)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from forge_ray.demo import run_demo

    config = load(args)
    run_demo(config, address=args.address, scale=args.scale)
    return 0
