"""`forge jobs list | logs | stop`: the jobs on a Ray cluster, through its job API.

    forge jobs list --address http://head:8265
    forge jobs logs forge-demo-pipeline-1 --follow
    forge jobs stop pipeline            # a job name means the newest job of that name
"""

from __future__ import annotations

import argparse

from forge_ray.cli.submit import add_address_arg

HELP = "list the cluster's jobs, show a job's logs, or stop one"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help=HELP, description=HELP)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="submitted jobs, newest first")
    add_address_arg(ls)
    ls.set_defaults(func=run_list)
    for name, helptext, func in (("logs", "print a job's logs", run_logs), ("stop", "stop a job", run_stop)):
        a = actions.add_parser(name, help=helptext)
        a.add_argument("ref", metavar="JOB", help="a submission id, or a job name (its newest submission)")
        add_address_arg(a)
        if name == "logs":
            a.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
        else:
            a.add_argument("--wait", action="store_true", help="wait until the job has stopped")
        a.set_defaults(func=func)


def run_list(args: argparse.Namespace) -> int:
    from forge_ray.operate.client import format_duration, format_time, job_client, job_label, sorted_jobs

    jobs = sorted_jobs(job_client(args.address))
    if not jobs:
        print("no jobs")
        return 0
    print(f"{'SUBMISSION ID':28s} {'STATUS':9s} {'STARTED':19s} {'TIME':>9s}  JOB")
    for j in jobs:
        started = format_time(j.start_time)
        print(f"{j.submission_id:28s} {j.status.value:9s} {started:19s} {format_duration(j):>9s}  {job_label(j)}")
    return 0


def run_logs(args: argparse.Namespace) -> int:
    from forge_ray.operate.client import find_job, follow_logs, job_client

    client = job_client(args.address)
    job = find_job(client, args.ref)
    if args.follow:
        follow_logs(client, job.submission_id)
    else:
        print(client.get_job_logs(job.submission_id), end="")
    return 0


def run_stop(args: argparse.Namespace) -> int:
    from forge_ray.operate.client import ACTIVE, find_job, job_client, wait_until_done

    client = job_client(args.address)
    job = find_job(client, args.ref)
    if str(job.status.value) not in ACTIVE:
        print(f"{job.submission_id} already ended: {job.status.value}")
        return 0
    client.stop_job(job.submission_id)
    status = wait_until_done(client, job.submission_id, timeout_s=60) if args.wait else "stopping"
    print(f"{job.submission_id} {status}")
    return 0
