"""`forge submit <job> -c FILE [--address URL]`: validate the forge file, then run the job on the cluster.

    forge submit pipeline -c jobs/configs/demo.yaml --address http://head:8265
    forge submit demo -c jobs/configs/demo.yaml --no-wait -- --scale 0.1

Same as `ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m
jobs.<job> --config FILE`, plus: the config is checked first, the job gets the id
forge-<project>-<job>-<n>, and a second submission while one is running is refused.
"""

from __future__ import annotations

import argparse
import sys

from forge_ray.cli.common import add_config_args
from forge_ray.errors import ForgeError

HELP = "submit a job (jobs/<job>.py) to a Ray cluster through its job API; args after -- go to the job"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help=HELP, description=HELP)
    p.add_argument("job", help="the job to run: a module of jobs/ (demo, prepare, train, eval, serve, pipeline)")
    add_config_args(p, address=False)
    add_address_arg(p)
    p.add_argument("--working-dir", default=None, help="folder uploaded as the job's working dir "
                   "(default: the forge_ray checkout that holds the current directory)")
    p.add_argument("--no-wait", action="store_true", help="return after submitting instead of following the logs")
    # Arguments after `--` (split off in forge_ray.cli.main) are passed on to the job.
    p.set_defaults(job_args=[])
    p.set_defaults(func=run)


def add_address_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="the cluster's job API, http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS, an http RAY_ADDRESS, "
        "else http://127.0.0.1:8265)",
    )


def run(args: argparse.Namespace) -> int:
    from forge_ray.operate.client import follow_logs, job_client
    from forge_ray.operate.submit import prepare_submission, submit

    sub = prepare_submission(args.job, args.config, args.overrides, args.job_args, args.working_dir)
    root = sub.config.project.storage_root
    if "://" not in root and not root.startswith("/"):
        print(f"note: storage_root {root!r} is relative: on the cluster it lies inside this job's "
              "working dir; use an absolute path or a URI shared by the nodes to keep outputs", file=sys.stderr)
    client = job_client(args.address)
    submission_id = submit(client, sub)
    print(f"submitted {submission_id}: {sub.entrypoint}")
    print(f"  logs: forge jobs logs {submission_id} --address {client.get_address()}")
    if args.no_wait:
        return 0
    status = follow_logs(client, submission_id)
    print(f"{submission_id} {status}")
    if status != "SUCCEEDED":
        raise ForgeError(f"job {submission_id} ended {status}")
    return 0
