"""Export: a training checkpoint -> a Hugging Face folder + manifest, published as a registry candidate."""

from forge_ray.export.version import (
    ExportedVersion,
    code_version,
    export_checkpoint,
    export_from_run,
    export_run,
)

__all__ = ["ExportedVersion", "code_version", "export_checkpoint", "export_from_run", "export_run"]
