"""`forge eval -c FILE [--version V]`: evaluate a candidate and promote or reject it.

Exit status: 0 promoted, 1 rejected (the reasons are printed), 2 bad forge file or KPI suite,
3 evaluation could not run.
"""

from __future__ import annotations

import argparse

from forge_ray.cli.common import add_config_args, load
from forge_ray.errors import ForgeError

HELP = "evaluate a candidate version (perplexity, KPI suites, canaries) and gate its promotion"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help=HELP, description=HELP)
    add_config_args(p)
    p.add_argument(
        "--version",
        default=None,
        metavar="V",
        help="registry version id or exported folder (default: the newest candidate)",
    )
    p.set_defaults(func=run)


def newest_candidate(config, storage) -> str:
    from forge_ray.registry import Registry

    registry = Registry(storage, config.model.name)
    candidates = [v.version for v in registry.list() if v.state == "candidate"]
    if not candidates:
        raise ForgeError(f"no candidate version of {config.model.name!r} to evaluate (train one first)")
    return candidates[-1]


def run(args: argparse.Namespace) -> int:
    from forge_ray.cluster import connect_for
    from forge_ray.eval import evaluate_and_gate, format_report, load_suites
    from forge_ray.storage import Storage

    config = load(args)
    load_suites(config.eval.suites)  # a bad suite fails here, before the cluster starts
    storage = Storage(config.project.storage_root)
    version = args.version or newest_candidate(config, storage)
    connect_for(config, args.address)
    report = evaluate_and_gate(config, version, storage)
    print(format_report(report))
    return 0 if report["gate"]["decision"] == "promote" else 1
