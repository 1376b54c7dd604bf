"""The demo as a job: the pipeline on the embedded default corpora, with a hot swap.

    python -m jobs.demo --config jobs/configs/demo.yaml
    ray job submit --working-dir . -- python -m jobs.demo --config jobs/configs/demo.yaml
"""

import sys

from forge_ray.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
