"""`project`: what this forge file is about and where its artefacts live."""

from __future__ import annotations

from pydantic import Field

from forge_ray.config.base import Section

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class LocalClusterConfig(Section):
    """The local Ray cluster forge starts when no `--address` / RAY_ADDRESS is given."""

    num_cpus: int = Field(
        8,
        ge=1,
        description="Logical CPUs (scheduling tokens) of the local cluster. More than the physical "
        "cores on purpose: Serve's ingress, replicas and placement groups each hold one, and with "
        "2 the serving app never becomes ready.",
    )
    object_store_mb: int = Field(
        1024, ge=256, description="Ray object store size of the local cluster, in MiB."
    )


class ProjectConfig(Section):
    """The project: its name and the one storage root every artefact lives under."""

    name: str = Field(
        description="Project name: lowercase letters, digits, '-' or '_' (used in paths and job names).",
        pattern=NAME_PATTERN,
    )
    storage_root: str = Field(
        "./forge_data",
        min_length=1,
        description="fsspec URI under which every artefact lives (datasets, runs, registry): a local "
        "path (relative paths are taken from the working directory), memory://..., s3://..., "
        "gs://... where its fsspec package is installed.",
    )
    local_cluster: LocalClusterConfig = Field(
        default_factory=LocalClusterConfig,
        description="Resources of the local Ray cluster started when no cluster address is given.",
    )
