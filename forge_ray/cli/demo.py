"""`forge demo` and `forge pipeline`: the whole pipeline, end to end, saying what it did."""

from __future__ import annotations

import argparse

from forge_ray.cli.common import add_config_args, load
from forge_ray.cluster import given_address

DEMO_HELP = "run the whole pipeline on the embedded default data, ending with a hot swap"
PIPELINE_HELP = "prepare -> train -> export -> eval -> promote -> serve, for train.rounds rounds"


def register(sub: argparse._SubParsersAction) -> None:
    for name, help_, rounds in (("demo", DEMO_HELP, 2), ("pipeline", PIPELINE_HELP, None)):
        p = sub.add_parser(name, help=help_, description=help_)
        add_config_args(p)
        p.add_argument("--rounds", type=int, default=rounds,
                       help="training rounds (default: train.rounds" + (", at least 2 for the demo)" if rounds else ")"))
        p.add_argument("--keep-serving", action="store_true", help="leave the endpoint up at the end")
        p.add_argument("--scale", type=float, default=1.0,
                       help="size of the embedded corpora when they are written, (0, 1] (default 1)")
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from forge_ray.pipeline import run_pipeline

    config = load(args)
    rounds = args.rounds
    if args.command == "demo":
        rounds = max(rounds or 2, config.train.rounds)
    # A local cluster (no address) stops with this command, its endpoint with it: Serve's own graceful
    # shutdown would only add its replicas' wait and its "(raylet) Task ServeController... failed" lines.
    local = given_address(args.address) is None
    run_pipeline(config, address=args.address, rounds=rounds, keep_serving=args.keep_serving or local,
                 scale=args.scale)
    if local:
        from forge_ray.cli.main import stop_ray

        stop_ray()
    return 0
