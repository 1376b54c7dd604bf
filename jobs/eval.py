"""Evaluate a candidate and gate its promotion, as a job.

    python -m jobs.eval --config jobs/configs/demo.yaml [--version V]
    ray job submit --working-dir . -- python -m jobs.eval --config jobs/configs/demo.yaml
"""

import sys

from forge_ray.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
