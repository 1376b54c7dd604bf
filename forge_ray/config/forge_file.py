"""The whole forge file: one typed tree, one section per room, cross-section rules here."""

from __future__ import annotations

from pydantic import Field, model_validator

from forge_ray.config.base import Section
from forge_ray.config.data import DataConfig
from forge_ray.config.eval import EvalConfig
from forge_ray.config.mixture import MixtureConfig
from forge_ray.config.model import ModelConfig
from forge_ray.config.prepare import PrepareConfig
from forge_ray.config.project import ProjectConfig
from forge_ray.config.rl import RLConfig
from forge_ray.config.serve import ServeConfig
from forge_ray.config.synthesize import SynthesizeConfig, synthesize_problems
from forge_ray.config.train import TrainConfig, check_train_against_model


class ForgeConfig(Section):
    """A forge file: everything one project needs, from corpora to the served endpoint."""

    project: ProjectConfig = Field(description="Project name and storage root.")
    data: DataConfig = Field(description="The corpora.")
    prepare: PrepareConfig = Field(
        default_factory=PrepareConfig, description="Raw corpora -> packed token shards."
    )
    synthesize: SynthesizeConfig = Field(
        default_factory=SynthesizeConfig, description="Restricted records -> privacy-checked synthetic sources."
    )
    mixture: MixtureConfig = Field(
        default_factory=MixtureConfig, description="Mixing prepared sources into one stream."
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="The decoder to train.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The training run.")
    rl: RLConfig | None = Field(None, description="GRPO on KPI rewards (train.objective: grpo; docs/rl.md).")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation and promotion gate.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="The serving endpoint.")

    @model_validator(mode="after")
    def _mixture_names_known_sources(self) -> ForgeConfig:
        if self.mixture.datasets:  # their sources are known once they are opened: build_plan checks then
            return self
        for field, names in self.mixture.named_sources().items():
            known = self.data.names + self.synthesize.output_names()  # synthetic sources mix like any other
            unknown = sorted(set(names) - set(known))
            if unknown:
                raise ValueError(f"mixture.{field} names unknown source(s) {unknown}; sources are {known}")
        return self

    @model_validator(mode="after")
    def _pii_sources_known(self) -> ForgeConfig:
        # A misspelt name would silently fall back to `prepare.pii.entities` for the real source.
        unknown = sorted(set(self.prepare.pii.sources) - set(self.data.names))
        if unknown:
            raise ValueError(f"prepare.pii.sources names unknown source(s) {unknown}; sources are {self.data.names}")
        return self

    @model_validator(mode="after")
    def _synthesize_reads_restricted_sources(self) -> ForgeConfig:
        problems = synthesize_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _train_fits_model(self) -> ForgeConfig:
        problems = check_train_against_model(self.model, self.train)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _grpo_has_rl(self) -> ForgeConfig:
        from forge_ray.config.rl import rl_problems

        problems = rl_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _tokenizer_defaults_to_init_from(self) -> ForgeConfig:
        # Open weights come with their tokenizer: unless the file chose one, reuse the folder's own.
        tok, folder = self.prepare.tokenizer, self.model.init_from or self.model.upcycle_from
        if folder and "mode" not in tok.model_fields_set and tok.mode == "train":
            reused = tok.model_copy(update={"mode": "reuse", "path": folder})
            reused.model_fields_set.update({"mode", "path"})
            object.__setattr__(self.prepare, "tokenizer", reused)
        return self
