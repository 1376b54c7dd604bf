"""Export a training checkpoint as a registry candidate: an HF folder plus its manifest.

    from forge_ray.export import export_run, export_checkpoint
    exported = export_run(result, config, dataset, storage)     # after run_training
    exported.path  ->  <storage_root>/registry/<model>/<version>/

The folder is what `AutoModelForCausalLM.from_pretrained` and `vllm.LLM` load as is
(docs/contracts.md, "Exported version"); the manifest carries the lineage (dataset version and
input hashes, mixture plan, resolved config, run, code version), the final metrics, and canary
prompts with the greedy tokens `transformers` produces for these weights. The registry
(`publish_version`) copies it in atomically, checksummed.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from forge_ray.config import ForgeConfig
from forge_ray.config.model import ModelConfig
from forge_ray.storage import Storage

if TYPE_CHECKING:
    from forge_ray.prepare.dataset import PreparedDataset
    from forge_ray.train import TrainResult

CANARY_TOKENS = 16


@dataclass
class ExportedVersion:
    model: str
    version: str
    path: str  # filesystem path of the registry version folder
    manifest: dict


def code_version() -> str:
    """Package version + a hash of the model/train/export code that produced the weights."""
    from forge_ray import __version__

    h = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for sub in ("models", "train", "rl", "export"):
        for path in sorted((root / sub).glob("*.py")):
            h.update(f"{sub}/{path.name}".encode() + path.read_bytes())
    return f"{__version__}+{h.hexdigest()[:10]}"


def input_hashes(dataset: PreparedDataset) -> dict:
    """{source: [{uri, sha256, bytes}]} of the raw inputs the dataset was prepared from."""
    return {name: src.get("inputs", []) for name, src in dataset.manifest.get("sources", {}).items()}


def _merge_lora(weights: dict[str, torch.Tensor], config: ForgeConfig) -> tuple[dict, dict]:
    """(weights with LoRA adapters merged in, the adapters if `train.lora.save_adapter`): vLLM and
    transformers load the merged folder as a plain model (docs/sft.md)."""
    from forge_ray.models.lora import adapter_only, is_lora_name, merge_lora_weights

    if not any(is_lora_name(k) for k in weights):
        return weights, {}
    lora = config.train.lora
    if lora is None:
        raise ValueError("the checkpoint holds LoRA adapters but train.lora is unset: its scale is unknown")
    return merge_lora_weights(weights, lora.scale), adapter_only(weights) if lora.save_adapter else {}


@dataclass(frozen=True)
class TokenizerFiles:
    """The tokenizer an export ships: its folder and the special ids the model config records."""

    folder: str
    eos: int
    bos: int | None = None
    pad: int | None = None

    @classmethod
    def of_dataset(cls, dataset: PreparedDataset) -> TokenizerFiles:
        tok = dataset.manifest["tokenizer"]
        return cls(dataset.tokenizer_path, int(tok["eos_token_id"]), tok.get("bos_token_id"), tok.get("pad_token_id"))


def dataset_lineage(dataset: PreparedDataset, plan_json: dict) -> dict:
    return {"dataset": dataset.dataset, "dataset_version": dataset.version, "input_hashes": input_hashes(dataset),
            "mixture_plan": plan_json}


def export_checkpoint(
    checkpoint_dir: str,
    config: ForgeConfig,
    dataset: PreparedDataset,
    storage: Storage,
    *,
    model: ModelConfig,
    run: str,
    plan_json: dict,
    metrics: dict,
    version: str | None = None,
    prompts: tuple[str, ...] | None = None,
) -> ExportedVersion:
    """Write the checkpoint's weights as an HF folder, record canaries, publish as a candidate."""
    return publish_checkpoint(checkpoint_dir, config, storage, model=model, run=run,
                              tokenizer=TokenizerFiles.of_dataset(dataset),
                              lineage=dataset_lineage(dataset, plan_json), metrics=metrics, version=version,
                              prompts=prompts)


def publish_checkpoint(
    checkpoint_dir: str,
    config: ForgeConfig,
    storage: Storage,
    *,
    model: ModelConfig,
    run: str,
    tokenizer: TokenizerFiles,
    lineage: dict,
    metrics: dict,
    version: str | None = None,
    prompts: tuple[str, ...] | None = None,
) -> ExportedVersion:
    """The checkpoint as a registry candidate; `lineage` names what it was trained on (a dataset and
    its mixture plan, or RL's prompts and base version).

    The folder's dtype is the one the run trained in, as its checkpoint recorded it (float32 for
    checkpoints that did not): the training workers decide it from their device, not the config."""
    from forge_ray.models.hf import save_hf_folder
    from forge_ray.registry import publish_version, record_canaries
    from forge_ray.registry.canary import DEFAULT_PROMPTS
    from forge_ray.registry.store import Registry
    from forge_ray.train.checkpoint import checkpoint_dtype, read_checkpoint

    weights, _, state = read_checkpoint(checkpoint_dir, optimizer=False)
    version = version or f"{run}-s{state['step']}"
    with tempfile.TemporaryDirectory(prefix="forge-export-") as tmp:
        weights, adapter = _merge_lora(weights, config)
        hf_dir = str(Path(tmp) / "hf")
        save_hf_folder(weights, model, hf_dir, tokenizer_dir=tokenizer.folder, eos=tokenizer.eos, bos=tokenizer.bos,
                       pad=tokenizer.pad, dtype=checkpoint_dtype(state))
        if adapter:  # train.lora.save_adapter: the adapter alone, beside the merged weights
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in adapter.items()}, str(Path(hf_dir) / "adapter.safetensors"))
        manifest = {
            "code_version": code_version(),
            "canaries": record_canaries(hf_dir, prompts or DEFAULT_PROMPTS, CANARY_TOKENS),
            "lineage": {
                **lineage,
                "config": json.loads(config.model_dump_json()),
                "model": json.loads(model.model_dump_json()),
                "run": run,
                "checkpoint_step": state["step"],
                "tokens_seen": state.get("tokens_seen"),
            },
            "metrics": metrics,
        }
        publish_version(storage, model.name, version, hf_dir, manifest)
    path = Registry(storage, model.name).version_path(version)
    return ExportedVersion(model.name, version, path, storage.read_json(f"registry/{model.name}/{version}/manifest.json"))


def export_run(result: TrainResult, config: ForgeConfig, dataset: PreparedDataset,
               storage: Storage | None = None, version: str | None = None) -> ExportedVersion:
    """Export the final checkpoint of a finished `run_training` result."""
    storage = storage or Storage(config.project.storage_root)
    final = result.metrics[-1] if result.metrics else {}
    keep = ("step", "loss", "lm_loss", "aux_loss", "loss_by_source", "tokens_per_s", "mfu", "tokens_seen",
            "world_size", "expert_tokens")
    metrics = {k: final[k] for k in keep if k in final}
    metrics["wall_s"] = round(result.wall_s, 2)
    return export_checkpoint(result.checkpoint_dir, config, dataset, storage, model=result.model, run=result.run,
                             plan_json=result.plan.to_json(), metrics=metrics, version=version)


def export_from_run(config: ForgeConfig, run: str, *, checkpoint: str | None = None,
                    version: str | None = None) -> ExportedVersion:
    """`forge export`: a run's latest (or given) checkpoint, with the lineage its run.json recorded."""
    from forge_ray.errors import StorageError
    from forge_ray.prepare.dataset import open_dataset
    from forge_ray.train.checkpoint import read_state
    from forge_ray.train.runs import latest_checkpoint

    storage = Storage(config.project.storage_root)
    if not storage.exists("runs", run, "run.json"):
        raise StorageError(f"no run {run!r} under {storage.url('runs')} (no run.json)")
    info = storage.read_json(f"runs/{run}/run.json")
    ckpt = checkpoint or latest_checkpoint(storage.location("runs", run))
    dataset = open_dataset(storage, info["dataset"], info["dataset_version"])
    state = read_state(ckpt)
    return export_checkpoint(ckpt, config, dataset, storage, model=ModelConfig.model_validate(info["model"]),
                             run=run, plan_json=info["mixture_plan"], metrics=state.get("metrics", {}),
                             version=version)
