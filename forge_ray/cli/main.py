"""`forge`: the operator's command line over a forge file.

    forge validate -c jobs/configs/demo.yaml
    forge demo -c jobs/configs/demo.yaml
    forge prepare -c jobs/configs/demo.yaml
    forge synthesize -c jobs/configs/demo.yaml
    forge train -c jobs/configs/demo.yaml [--dry-run]
    forge export -c jobs/configs/demo.yaml --run RUN
    forge dataset show ./forge_data/demo/datasets/demo
    forge mixture -c jobs/configs/demo.yaml [--json]
    forge eval -c jobs/configs/demo.yaml [--version V]
    forge submit pipeline -c jobs/configs/demo.yaml --address http://HEAD:8265
    forge jobs list | logs JOB | stop JOB
    forge status -c jobs/configs/demo.yaml
    forge serve -c jobs/configs/demo.yaml
    forge registry list|show|promote|reject|rollback -c jobs/configs/demo.yaml

Errors a user can fix (bad config, unwritable storage, missing files) print one clear
message and exit non-zero, without a traceback; `--verbose` shows debug logs.
"""

from __future__ import annotations

import argparse
import sys

from forge_ray import __version__
from forge_ray.cli import dataset, demo, jobs, mixture, prepare, status, submit, synthesize, train, validate
from forge_ray.cli import eval as eval_command
from forge_ray.cli import registry as registry_command
from forge_ray.cli import serve as serve_command
from forge_ray.cli.common import setup_logging
from forge_ray.errors import ForgeError

# Each subcommand module has `register(subparsers)`; later rooms add theirs here.
COMMANDS = [validate, demo, submit, jobs, status, eval_command, prepare, synthesize, dataset, serve_command, registry_command, train, mixture]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forge",
        description="forge_ray: prepare corpora, train, evaluate and serve your own language model "
        "on your own Ray cluster.",
    )
    parser.add_argument("--version", action="version", version=f"forge_ray {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Arguments after `--` go to the job a command starts (`forge submit demo -c F -- --scale 0.1`).
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = build_parser()
    args = parser.parse_args(argv[: len(argv) - len(extra) - 1] if "--" in argv else argv)
    if extra and not hasattr(args, "job_args"):
        parser.error(f"forge {args.command} takes no arguments after --")
    args.job_args = extra
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except ForgeError as e:
        print(f"forge {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"forge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
