"""The forge file: one YAML file per project, validated by a typed tree (unknown keys forbidden).

    from forge_ray.config import load_config
    cfg = load_config("jobs/configs/demo.yaml", overrides=["train.steps=20"])
"""

from forge_ray.config.data import DataConfig, SourceConfig
from forge_ray.config.forge_file import ForgeConfig
from forge_ray.config.loader import config_hash, dump_config, field_path, load_config, validate_config
from forge_ray.config.project import ProjectConfig
from forge_ray.config.synthesize import SynthesizeConfig

__all__ = [
    "DataConfig",
    "ForgeConfig",
    "ProjectConfig",
    "SourceConfig",
    "SynthesizeConfig",
    "config_hash",
    "dump_config",
    "field_path",
    "load_config",
    "validate_config",
]
