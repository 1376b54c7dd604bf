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
import contextlib
import signal
import sys
import threading

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
    # SIGTERM (a job stop, a service manager, `kill`) ends a command as Ctrl-C does.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return int(args.func(args) or 0)
    except ForgeError as e:
        print(f"forge {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"forge {args.command}: interrupted; stopping", file=sys.stderr, flush=True)
        stop_ray()
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_ray() -> None:
    """Disconnect; a local cluster this process started stops with it (its workers, replicas and
    engines are killed: artefacts are written atomically, so what was complete stays complete)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    import psutil

    # A local cluster's processes descend from this one (GCS, raylet, workers, and what workers
    # start: vLLM's engine core). One whose parent dies first is re-parented and outlives
    # `ray.shutdown`: take the list before, end the survivors after.
    ours = psutil.Process().children(recursive=True)
    ray.shutdown()
    _, alive = psutil.wait_procs(ours, timeout=3)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


if __name__ == "__main__":
    sys.exit(main())
