"""`forge status [-c FILE] [--address URL]`: cluster resources, running jobs, Serve apps, served version.

    forge status --address http://head:8265 -c jobs/configs/demo.yaml
"""

from __future__ import annotations

import argparse
import json

from forge_ray.cli.submit import add_address_arg
from forge_ray.errors import ForgeError

HELP = "show the cluster's resources, running jobs, Serve applications and the served version"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help=HELP, description=HELP)
    p.add_argument("-c", "--config", default=None, metavar="FILE", help="forge file: adds the served version")
    add_address_arg(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from forge_ray.config import load_config
    from forge_ray.operate.client import job_client
    from forge_ray.operate.status import cluster_status, format_status, storage_status

    config = load_config(args.config) if args.config else None
    try:
        client = job_client(args.address)
    except ForgeError as e:
        if config is None:
            raise
        info = storage_status(config, str(e).split(";")[0])  # runs and versions are on storage
    else:
        info = cluster_status(client, config)
    print(json.dumps(info, indent=2) if args.json else format_status(info))
    return 0
