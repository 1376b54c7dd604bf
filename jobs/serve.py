"""Serve the promoted model version as a job (OpenAI-compatible endpoint with hot swap).

    python -m jobs.serve --config jobs/configs/demo.yaml
    ray job submit --working-dir . -- python -m jobs.serve --config jobs/configs/demo.yaml --detach
"""

import sys

from forge_ray.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
