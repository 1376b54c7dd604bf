"""Done-when tests of continuing open weights, on a real local Ray cluster, DeepSpeed and vLLM (CPU).

Each family (Llama with Llama 3.1 rope scaling, Mistral with a sliding window, Qwen2, Qwen3,
Mixtral) is a tiny random model built with transformers' own classes and saved with the prepared
dataset's tokenizer (no download). forge continues it for a few steps on the embedded corpora
(`model.init_from`): the loss falls; the export is the same architecture class, and vLLM's
greedy tokens equal the transformers greedy tokens recorded at export. Then an instruct-style
tokenizer (EOS doubling as pad, a chat template) reused through `init_from` alone keeps its
vocabulary, ids and chat template through prepare.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from forge_ray.offline import OFFLINE_ENV
from tests.conftest import DEMO_CONFIG

REPO = Path(__file__).resolve().parent.parent.parent
TRAIN = ["train.min_workers=2", "train.max_workers=2", "train.micro_batch_size=2", "train.global_batch_size=8",
         "train.checkpoint_every=10", "train.warmup_steps=2", "train.lr=3e-3", "train.steps=10", "train.zero_stage=1",
         # the prepared corpora only (the demo's synthetic source is not made here)
         "mixture.weights={docs: 0.4, code: 0.3, tickets: 0.3, escalations: 0}", "mixture.max_epochs={tickets: 4.0}"]
# head_dim 64: vLLM's CPU attention needs >= 32
COMMON = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=1, initializer_range=0.2, max_position_embeddings=512)
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"rope_parameters": {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 32, "head_dim": 64}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 64, "num_attention_heads": 4,
                                                  "num_key_value_heads": 2}),  # head_dim != hidden / heads
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2}),
}


def open_weights(folder: Path, family: str, tokenizer_dir: str, vocab: int) -> str:
    """A tiny random model of `family`, saved as transformers saves it, with `tokenizer_dir`'s files."""
    import transformers

    config_cls, model_cls, extra = FAMILIES[family]
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**{**COMMON, **extra, "vocab_size": vocab})
    getattr(transformers, model_cls)(config).save_pretrained(folder)
    for f in Path(tokenizer_dir).iterdir():
        shutil.copy2(f, folder / f.name)
    return str(folder)


@pytest.fixture(scope="module")
def continued(prepared_dataset, tmp_path_factory):
    """`continued(family)`: that family's open weights continued for a few steps and exported
    (run once per family, shared by its own test and the one vLLM test)."""
    from forge_ray.config import load_config
    from forge_ray.export import export_run
    from forge_ray.storage import Storage
    from forge_ray.train import run_training

    root, dataset = prepared_dataset
    runs: dict = {}

    def run(family: str):
        if family not in runs:
            folder = open_weights(tmp_path_factory.mktemp(f"open-{family}"), family, dataset.tokenizer_path,
                                  dataset.tokenizer_info["vocab_size"])
            name = f"ow-{family}"
            config = load_config(DEMO_CONFIG, [f"project.storage_root={root}", f"train.run_name={name}",
                                               f"model.name={name}", f"model.init_from={folder}", *TRAIN])
            result = run_training(config, dataset)
            runs[family] = (result, export_run(result, config, dataset, Storage(str(root))))
        return runs[family]

    return run


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_continue_each_family_and_export_it_as_the_same_class(continued, family):
    from transformers import AutoModelForCausalLM

    result, exported = continued(family)
    assert result.model.hf_architecture == family
    losses = [m["lm_loss"] for m in result.metrics]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses

    raw = json.loads((Path(exported.path) / "config.json").read_text())
    assert raw["architectures"] == [FAMILIES[family][1]]
    assert type(AutoModelForCausalLM.from_pretrained(exported.path)).__name__ == FAMILIES[family][1]


def test_vllm_serves_every_family_export_as_transformers_generates_it(continued, tmp_path):
    """vLLM's greedy tokens for each export's canary prompts are the transformers greedy tokens
    recorded at export (one vLLM process loads the five exports in turn)."""
    exports = {family: continued(family)[1] for family in sorted(FAMILIES)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(OFFLINE_ENV, PYTHONPATH=str(REPO))
    out = tmp_path / "vllm.json"
    proc = subprocess.run([sys.executable, str(REPO / "tests/integration/vllm_greedy.py"), str(out), "8",
                           *(e.path for e in exports.values())],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    for family, exported in exports.items():
        assert got[exported.path] == [c["greedy_token_ids"][:8] for c in exported.manifest["canaries"]], family


def test_init_from_alone_reuses_the_models_tokenizer_as_it_is(prepared_dataset, tmp_path):
    """The issue's reproduction: an instruct tokenizer whose pad token is its EOS. Prepared through
    `model.init_from` alone, nothing is added and the chat template travels with the dataset."""
    from transformers import AutoTokenizer

    from forge_ray.config.loader import load_yaml, validate_config
    from forge_ray.prepare.run import prepare_dataset
    from tests.unit.test_hf_tokenizer import instruct_tokenizer

    root, _ = prepared_dataset
    folder = Path(instruct_tokenizer(tmp_path / "instruct", in_config=True))
    raw = load_yaml(DEMO_CONFIG)
    raw["project"]["storage_root"] = str(root)
    raw["prepare"].update(dataset="instruct", seq_len=128)
    del raw["prepare"]["tokenizer"]["mode"]
    del raw["prepare"]["tokenizer"]["pad_token"]  # the demo's, for its own trained tokenizer
    raw["model"]["init_from"] = str(folder)
    ds = prepare_dataset(validate_config(raw))
    original = AutoTokenizer.from_pretrained(folder)
    assert ds.tokenizer_info["vocab_size"] == len(original)
    assert ds.eos_token_id == original.eos_token_id
    assert ds.pad_token_id == original.convert_tokens_to_ids("<|endoftext|>")  # its own token, masked
    for name in ("tokenizer.json", "tokenizer_config.json"):  # chat template included, byte for byte
        assert (Path(ds.tokenizer_path) / name).read_bytes() == (folder / name).read_bytes()
    assert ds.tokenizer_info["chat_template"] is True
