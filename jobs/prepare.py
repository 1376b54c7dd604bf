"""Run the prepare stage as a job.

    python -m jobs.prepare --config jobs/configs/demo.yaml
    ray job submit --working-dir . -- python -m jobs.prepare --config jobs/configs/demo.yaml
"""

import sys

from forge_ray.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
