"""`forge synthesize -c FILE`: restricted records of the prepared dataset -> privacy-checked synthetic sources.

    forge synthesize -c jobs/configs/demo.yaml [--address ray://HEAD:10001] [--set synthesize.seed=1]

Prints, per source, where the synthetic source is, its strategy and the counts per outcome and
drop reason; a complete synthesis of the same inputs and settings is reused, not rebuilt.
"""

from __future__ import annotations

import argparse

from forge_ray.cli.common import add_config_args, load

HELP = "turn restricted records into a privacy-checked synthetic source (surrogate, teacher or template)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synthesize", help=HELP, description=HELP)
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from forge_ray.synthesize import synthesize

    config = load(args)
    for source, m in synthesize(config, address=args.address).items():
        c, p = m["counts"], m["privacy"]
        print(f"synthetic {m['name']} <- {source} ({m['strategy']}, seed {m['seed']}): kept {c['kept']} of "
              f"{c['samples']} samples, dropped {c['dropped'] or 'none'}; {m['splits']['train']['sequences']} "
              f"sequences; max shared run {p['max_shared_ngram_tokens_kept']} tokens (limit < {p['ngram_tokens']})")
        if m.get("previous_synthesis_id"):  # a rerun after a change: said, never a silent replacement
            print(f"  synthesis {m['synthesis_id']} is current; it replaced {m['previous_synthesis_id']} (inputs, "
                  "settings or code changed), which is kept for the versions trained on it")
    return 0
