"""`forge serve -c FILE`: serve the promoted version of the project's model (OpenAI API).

    forge serve -c jobs/configs/demo.yaml                 # local cluster; Ctrl-C stops it
    forge serve -c FILE --address ray://head:10001 --detach   # deploy on a cluster and return

Promote another version (`forge registry promote`) while it runs: the replicas hot-swap to it.
"""

from __future__ import annotations

import argparse
import signal
import time

from forge_ray.cli.common import add_config_args, load
from forge_ray.cluster import given_address

HELP = "serve the promoted model version on an OpenAI-compatible endpoint, hot-swapping promotions"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help=HELP, description=HELP)
    add_config_args(p)
    p.add_argument("--model", help="registry model (default: serve.model, else model.name)")
    p.add_argument("--detach", action="store_true", help="return once deployed (the app keeps running "
                   "in the cluster; use with --address)")
    p.set_defaults(func=run)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from forge_ray.serve import start_serving, status, stop_serving

    config = load(args, check_storage=False)
    endpoint = start_serving(config, address=args.address, model=args.model)
    st = status(endpoint)
    print(f"serving {endpoint.model} version {st['target']} at {endpoint.base_url} "
          f"({len(st['replicas'])} replica(s)); API keys from serve.auth")
    if args.detach:
        return 0
    last = max([e["time"] for e in st["events"]], default=0.0)
    # SIGTERM (a job stop, a service manager) stops the endpoint as Ctrl-C does, so the local
    # cluster this process started goes down with it instead of being orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:            # print the swap watcher's events as they happen
            time.sleep(2)
            for e in status(endpoint)["events"]:
                if e["time"] > last:
                    last = e["time"]
                    print(f"{time.strftime('%H:%M:%S', time.localtime(e['time']))} {e['event']:12s} "
                          f"{e['version']}: {e['detail']}", flush=True)
    except KeyboardInterrupt:
        if given_address(args.address):
            print("stopping the endpoint", flush=True)
            stop_serving(endpoint)  # the app lives on a cluster this process does not own
        else:
            # The local cluster goes down with this process: main's handler stops it at once,
            # without Serve's graceful replica shutdown (~30 s per replica).
            raise
    return 0
