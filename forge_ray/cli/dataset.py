"""`forge dataset show DIR`: a prepared dataset's manifest summary and decoded samples per source.

    forge dataset show ./forge_data/demo/datasets/demo            # the LATEST version
    forge dataset show ./forge_data/demo/datasets/demo/3f9c0a1b2d4e --samples 3
"""

from __future__ import annotations

import argparse
import posixpath

from forge_ray.errors import ForgeError

HELP = "show a prepared dataset: counts per source and outcome, tokens, decoded samples"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="inspect prepared datasets", description="inspect prepared datasets")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help=HELP, description=HELP)
    show.add_argument("dir", help="a dataset folder (<root>/datasets/<name>) or one of its version folders")
    show.add_argument("--samples", type=int, default=2, help="decoded samples per source (default 2)")
    show.add_argument("--chars", type=int, default=300, help="characters shown per sample (default 300)")
    show.set_defaults(func=run)


def locate(uri: str):
    """(storage, dataset, version) of a dataset folder or a version folder."""
    from forge_ray.prepare.dataset import DATASETS_DIR, LATEST, MANIFEST
    from forge_ray.storage import Storage

    uri = uri.rstrip("/")
    storage = Storage(uri)
    if storage.exists(MANIFEST):
        parent, version = posixpath.split(uri)
        parent, dataset = posixpath.split(parent)
        version_arg = version
    elif storage.exists(LATEST):
        parent, dataset = posixpath.split(uri)
        version_arg = "latest"
    else:
        raise ForgeError(f"{uri}: neither a dataset folder (with {LATEST}) nor a version folder (with {MANIFEST})")
    root, datasets = posixpath.split(parent)
    if datasets != DATASETS_DIR:
        raise ForgeError(f"{uri}: expected a path <storage_root>/{DATASETS_DIR}/<dataset>[/<version>]")
    return Storage(root or "."), dataset, version_arg


def run(args: argparse.Namespace) -> int:
    from forge_ray.prepare.dataset import open_dataset
    from forge_ray.prepare.manifest import summary_table

    storage, dataset, version = locate(args.dir)
    ds = open_dataset(storage, dataset, version)
    print(summary_table(ds.manifest))
    if args.samples <= 0:
        return 0
    tok = ds.load_tokenizer()
    for source in ds.sources:
        table = ds.read_split(source, "train") if ds.num_sequences(source, "train") else None
        rows = table.slice(0, args.samples).to_pylist() if table is not None else []
        print(f"\n--- {source}: {len(rows)} of {ds.num_sequences(source, 'train')} train sequences")
        for r in rows:
            text = tok.decode(r["input_ids"])
            print(f"[row {r['row']}] {text[: args.chars]!r}")
    return 0
