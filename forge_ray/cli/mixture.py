"""`forge mixture -c FILE`: resolve the mixture over the prepared dataset and print the plan.

    forge mixture -c jobs/configs/demo.yaml                 # the table a training run prints first
    forge mixture -c jobs/configs/demo.yaml --json          # what goes into the run's manifest
    forge mixture -c jobs/configs/demo.yaml --set mixture.max_epochs.tickets=1

Checks a new mix (weights, temperature, caps, token budget) against the prepared data before
a run starts: target and expected shares, samples and epochs per source, the binding caps.
"""

from __future__ import annotations

import argparse
import json

from forge_ray.cli.common import add_config_args, load

HELP = "print the resolved mixture plan (shares, epochs, caps) for the train section's steps"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mixture", help=HELP, description=HELP)
    add_config_args(p, address=False)
    p.add_argument("--dataset-version", default="latest", help="prepared dataset version (default: LATEST)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (the run manifest's mixture_plan)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from forge_ray.mixture import build_plan
    from forge_ray.prepare.dataset import open_dataset
    from forge_ray.storage import Storage

    config = load(args, check_storage=False)
    from forge_ray.synthesize import training_dataset

    dataset = open_dataset(Storage(config.project.storage_root), config.prepare.dataset, args.dataset_version)
    dataset = training_dataset(config, dataset)  # the synthetic sources of `synthesize.sources` mix too
    plan = build_plan(dataset, config.mixture, config.train.global_batch_size, config.train.steps)
    print(json.dumps(plan.to_json(), indent=2) if args.json else plan.summary())
    return 0
