"""The whole pipeline as a job: prepare -> train -> export -> eval -> promote -> serve, per round.

    python -m jobs.pipeline --config jobs/configs/demo.yaml [--rounds N] [--keep-serving]
    ray job submit --working-dir . -- python -m jobs.pipeline --config jobs/configs/demo.yaml
"""

import sys

from forge_ray.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
