"""`forge validate -c FILE`: print the resolved config, or every problem (exit 2)."""

from __future__ import annotations

import argparse

from forge_ray.cli.common import add_config_args
from forge_ray.config import dump_config, load_config

HELP = "check a forge file and print the resolved config (exit 2 on errors)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help=HELP, description=HELP)
    add_config_args(p, address=False)
    p.add_argument("--check-storage", action="store_true",
                   help="also reach the storage root (write a probe) and every object-store URI the file "
                        "names (init_from, tokenizer, KPI suites): an unreachable endpoint, wrong keys or a "
                        "missing bucket fail here, naming the URI")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    if args.check_storage:
        from forge_ray.storage import Storage, check_uris

        Storage(config.project.storage_root).check_writable()
        check_uris(_named_uris(config))
    print(dump_config(config), end="")
    return 0


def _named_uris(config) -> dict[str, str]:
    """{field: URI} of the object-store locations a forge file names besides its storage root."""
    named = {"model.init_from": config.model.init_from, "prepare.tokenizer.path": config.prepare.tokenizer.path}
    named.update({f"eval.suites[{i}]": s for i, s in enumerate(config.eval.suites)})
    return {k: v for k, v in named.items() if v and "://" in str(v) and not str(v).startswith("file://")}
