"""`forge prepare -c FILE`: turn the forge file's corpora into a prepared dataset version.

    forge prepare -c jobs/configs/demo.yaml [--address ray://HEAD:10001] [--set prepare.seq_len=512]

Prints the version folder and the manifest summary; an already complete version of the same
inputs and config is reused, not rebuilt.
"""

from __future__ import annotations

import argparse

from forge_ray.cli.common import add_config_args, load

HELP = "prepare the corpora: validate, redact PII, dedup, filter, tokenize and pack into shards"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help=HELP, description=HELP)
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from forge_ray.prepare.manifest import summary_table
    from forge_ray.prepare.run import prepare_dataset

    config = load(args)
    ds = prepare_dataset(config, address=args.address)
    print(f"prepared dataset: {ds.path}")
    print(summary_table(ds.manifest))
    return 0
