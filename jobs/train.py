"""Train (and export) the forge file's model as a job.

    python -m jobs.train --config jobs/configs/demo.yaml
    ray job submit --working-dir . -- python -m jobs.train --config jobs/configs/demo.yaml
"""

import sys

from forge_ray.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
