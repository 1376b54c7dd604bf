"""`forge train -c FILE` and `forge export -c FILE --run RUN`: train on the prepared dataset, export.

    forge train -c jobs/configs/demo.yaml [--address ...] [--set train.steps=20]
    forge train -c jobs/configs/demo.yaml --dry-run [--preset mixtral-8x7b] [--workers 8]
    forge export -c jobs/configs/demo.yaml --run demo-moe-20261201-120000 [--version v2]

`forge train` reads the newest version of `prepare.dataset` (run `forge prepare` first), trains
on the cluster and, with `train.export`, publishes the result as a registry candidate.
"""

from __future__ import annotations

import argparse

from forge_ray.cli.common import add_config_args, load

TRAIN_HELP = "train the model on the prepared dataset (Ray Train + DeepSpeed) and export it"
EXPORT_HELP = "export a run's checkpoint as a registry candidate (HF folder + manifest)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help=TRAIN_HELP, description=TRAIN_HELP)
    add_config_args(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print parameters, FLOPs per token and memory per worker; train nothing")
    p.add_argument("--preset", default=None, help="dry run: a named architecture (e.g. llama-7b, mixtral-8x7b)")
    p.add_argument("--workers", type=int, default=None, help="dry run: world size (default train.max_workers)")
    p.set_defaults(func=run_train)
    e = sub.add_parser("export", help=EXPORT_HELP, description=EXPORT_HELP)
    add_config_args(e, address=False)
    e.add_argument("--run", required=True, help="run name: the folder <storage_root>/runs/<run>/")
    e.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the run's latest)")
    e.add_argument("--version", default=None, help="version name (default: <run>-s<step>)")
    e.set_defaults(func=run_export)


def run_train(args: argparse.Namespace) -> int:
    config = load(args, check_storage=not args.dry_run)
    if args.dry_run:
        from forge_ray.train.runs import print_dry_run

        print_dry_run(config, preset=args.preset, workers=args.workers)
        return 0
    from forge_ray.cluster import connect_for

    if config.train.objective == "grpo":  # RL on KPI rewards: prompts, not a prepared dataset (docs/rl.md)
        from forge_ray.rl.driver import train_and_gate

        connect_for(config, args.address)
        train_and_gate(config)
        return 0
    from forge_ray.export import export_run
    from forge_ray.prepare.dataset import open_dataset
    from forge_ray.storage import Storage
    from forge_ray.train import run_training

    storage = Storage(config.project.storage_root)
    from forge_ray.synthesize import training_dataset

    dataset = training_dataset(config, open_dataset(storage, config.prepare.dataset))  # + synthetic sources
    connect_for(config, args.address)
    result = run_training(config, dataset, storage)
    last = result.metrics[-1] if result.metrics else {}
    print(f"run {result.run}: {len(result.metrics)} steps logged, final loss {last.get('loss', float('nan')):.4f}, "
          f"{result.wall_s:.0f} s; checkpoint {result.checkpoint_dir}")
    if config.train.export:
        exported = export_run(result, config, dataset, storage)
        print(f"exported version {exported.model}/{exported.version} (candidate): {exported.path}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from forge_ray.export import export_from_run

    config = load(args)
    exported = export_from_run(config, args.run, checkpoint=args.checkpoint, version=args.version)
    print(f"exported version {exported.model}/{exported.version} (candidate): {exported.path}")
    return 0
