"""`forge registry list|show|promote|reject|rollback -c FILE`: the versions of the project's model.

    forge registry list -c jobs/configs/demo.yaml
    forge registry show -c jobs/configs/demo.yaml VERSION
    forge registry promote -c jobs/configs/demo.yaml VERSION [--reason TEXT]
    forge registry rollback -c jobs/configs/demo.yaml [--to VERSION] [--reason TEXT]
"""

from __future__ import annotations

import argparse
import json

from forge_ray.cli.common import add_config_args, load
from forge_ray.registry import Registry

HELP = "list, show, promote, reject or roll back versions of the model in the registry"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("registry", help=HELP, description=HELP)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in [("list", "versions with state, architecture and date"),
                       ("show", "one version's manifest (without the file checksums), state history, reports"),
                       ("promote", "make VERSION the served one (checksums verified first)"),
                       ("reject", "mark VERSION rejected (the pointer moves back if it was promoted)"),
                       ("rollback", "the promoted version becomes rolled_back; serve the previous one")]:
        a = actions.add_parser(name, help=text, description=text)
        add_config_args(a, address=False)
        a.add_argument("--model", help="registry model (default: serve.model, else model.name)")
        if name in ("show", "promote", "reject"):
            a.add_argument("version", metavar="VERSION")
        if name in ("promote", "reject", "rollback"):
            a.add_argument("--reason", default="", help="recorded in the version's history")
        if name == "rollback":
            a.add_argument("--to", default=None, metavar="VERSION", help="roll back to this version")
        a.set_defaults(func=run)


def open_registry(args: argparse.Namespace) -> Registry:
    config = load(args, check_storage=False)
    return Registry(config.project.storage_root, args.model or config.serve.model or config.model.name)


def run(args: argparse.Namespace) -> int:
    reg = open_registry(args)
    if args.action == "list":
        pointer = reg.pointer()
        print(f"{reg.model}: promoted {pointer.version or '-'} (generation {pointer.generation})")
        for v in reg.list():
            mark = "*" if v.version == pointer.version else " "
            print(f"{mark} {v.version:24s} {v.state:12s} {v.architecture:20s} {v.created}")
    elif args.action == "show":
        info = reg.get(args.version)
        manifest = {k: v for k, v in info.manifest.items() if k != "files"}
        manifest["files"] = f"{len(info.manifest.get('files', {}))} files, sha256 each"
        print(json.dumps({"state": info.state, "url": info.url, "history": info.history,
                          "reports": info.reports, "manifest": manifest}, indent=2))
        from forge_ray.eval.report import REPORT_NAME, format_report, read_report

        if REPORT_NAME in info.reports:
            print(format_report(read_report(reg, args.version)))
    elif args.action == "promote":
        p = reg.promote(args.version, reason=args.reason)
        print(f"{reg.model}: promoted {p.version} (generation {p.generation})")
    elif args.action == "reject":
        p = reg.reject(args.version, args.reason or "rejected by operator")
        print(f"{reg.model}: rejected {args.version}; promoted is {p.version or '-'} (generation {p.generation})")
    elif args.action == "rollback":
        p = reg.rollback(args.reason, to=args.to)
        print(f"{reg.model}: rolled back to {p.version} (generation {p.generation})")
    return 0
