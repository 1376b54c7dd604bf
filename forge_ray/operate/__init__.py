"""Operating forge_ray on a cluster: job submission over Ray's job API and cluster status.

    from forge_ray.operate import job_client, prepare_submission, submit
    sub = prepare_submission("pipeline", "jobs/configs/demo.yaml")
    submission_id = submit(job_client("http://head:8265"), sub)
"""

from forge_ray.operate.client import ClusterUnreachable, JobNotFound, find_job, follow_logs, job_client
from forge_ray.operate.submit import Submission, SubmitError, job_runtime_env, prepare_submission, submit

__all__ = [
    "ClusterUnreachable",
    "JobNotFound",
    "SubmitError",
    "Submission",
    "find_job",
    "follow_logs",
    "job_client",
    "job_runtime_env",
    "prepare_submission",
    "submit",
]
