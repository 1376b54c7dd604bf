"""Run the synthesize stage as a job.

    python -m jobs.synthesize --config jobs/configs/demo.yaml
    ray job submit --working-dir . -- python -m jobs.synthesize --config jobs/configs/demo.yaml
"""

import sys

from forge_ray.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["synthesize", *sys.argv[1:]]))
