"""The `teacher` strategy: a model on vLLM writes new records from redacted ones, as Ray Data batch inference.

    gen = TeacherGenerator(teacher_cfg, storage_root)    # resolves and checks the model: fails before generation
    samples = gen.run(records, samples=2, seed=0, source="tickets", batch_size=64)  # a Ray Data dataset

Each prompt holds a record's redacted form (placeholders such as <PERSON>, never a real value)
and optionally few-shot redacted examples of other records; the teacher's placeholders are then
filled with fakes. N samples per record, each with its own vLLM sampling seed, so a rerun with the
same seed asks the same questions with the same seeds.

Engines: `vllm.LLM` in a Ray Data actor pool (`map_batches` with a class, `engines` actors), the
same offline engine eval uses (forge_ray/eval/generation.py); `ray.data.llm`'s processor was not
used: it was not verified on CPU here, and this room may not import the serving engine interface.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import fsspec

from forge_ray.synthesize.fakes import Fakes
from forge_ray.synthesize.records import SynthesizeError, sample_rng
from forge_ray.synthesize.surrogate import Generator, fill_placeholders


def resolve_teacher(cfg, storage_root: str) -> tuple[str, dict]:
    """(fsspec URI of the model folder, what the manifest records: model, version, file hashes)."""
    if cfg.path:
        uri = cfg.path.replace("{storage_root}", storage_root.rstrip("/"), 1)
        info = {"kind": "folder", "name": os.path.basename(uri.rstrip("/"))}
    else:
        from forge_ray.registry.store import Registry, RegistryError

        reg = Registry(storage_root, cfg.model)
        version = reg.promoted() if cfg.version == "promoted" else cfg.version
        if version is None:
            raise SynthesizeError(f"teacher: model {cfg.model!r} has no promoted version (give teacher.version)")
        try:
            uri = reg.get(version).url
        except RegistryError as e:
            raise SynthesizeError(f"teacher: {e}") from None
        info = {"kind": "registry", "model": cfg.model, "version": version}
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(f"{path}/config.json"):
        raise SynthesizeError(f"teacher at {uri} cannot load: no config.json (not a Hugging Face model folder)")
    hashes = {}
    for f in sorted(fs.find(path)):
        name = f[len(path.rstrip("/")) + 1:]
        if name.endswith((".json", ".safetensors", ".bin", ".model", ".txt")) and not name.startswith("_"):
            h = hashlib.sha256()
            with fs.open(f, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    h.update(chunk)
            hashes[name] = h.hexdigest()
    return uri, {**info, "sha256": hashes}


def _local(uri: str) -> str:
    fs, path = fsspec.core.url_to_fs(uri)
    if "file" in fs.protocol or "local" in fs.protocol:
        return path
    tmp = tempfile.mkdtemp(prefix="forge-teacher-")
    fs.get(path.rstrip("/") + "/", tmp + "/", recursive=True)
    return tmp


def whole_prompts_per_step(max_model_len: int) -> dict:
    """vLLM engine settings for seeded sampling on CPU: every prompt prefilled in one step.

    With chunked prefill a prompt split across steps has the token sampled at its partial step
    discarded, and vLLM (0.32, `gpu_model_runner._bookkeeping_sync`, which the CPU runner inherits)
    rewinds that request's `torch.Generator` with `set_offset`: a CPU generator has no offset and
    raises "CPU Generator does not use offset", killing the engine. It only fires for requests with
    a seed, which the teacher always sets (same seed, same samples). Without chunked prefill a
    prompt is scheduled whole or waits, so nothing is discarded; the step budget must then hold the
    longest prompt. (On GPUs the generators are Philox, with offsets: chunked prefill stays on.)"""
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 2048)}


class TeacherEngine:
    """A Ray Data actor: one `vllm.LLM` on the teacher's folder; a load failure is reported per batch."""

    def __init__(self, uri: str, cfg: dict):
        self.cfg, self.error = cfg, None
        try:
            from vllm import LLM

            self.llm = LLM(model=_local(uri), max_model_len=cfg["max_model_len"], dtype=cfg["dtype"],
                           enforce_eager=True, seed=0, distributed_executor_backend="uni",
                           **({} if cfg.get("gpus") else whole_prompts_per_step(cfg["max_model_len"])))
            self.tok = self.llm.get_tokenizer()
        except Exception as e:  # noqa: BLE001 - any failure to load means the teacher is unusable
            self.error = f"teacher cannot load: {type(e).__name__}: {e}"

    def __call__(self, batch: dict) -> dict:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        n = len(batch["prompt"])
        if self.error:  # reported in the rows: Ray Data's wrapper would hide the message from the driver
            return {**batch, "raw": [""] * n, "error": [self.error] * n}
        try:
            room = self.cfg["max_model_len"] - self.cfg["max_tokens"]
            prompts = [TokensPrompt(prompt_token_ids=self.tok(str(p))["input_ids"][-room:]) for p in batch["prompt"]]
            params = [SamplingParams(temperature=self.cfg["temperature"], top_p=self.cfg["top_p"],
                                     max_tokens=self.cfg["max_tokens"], seed=int(s)) for s in batch["seed"]]
            outs = self.llm.generate(prompts, params, use_tqdm=False)
        except Exception as e:  # noqa: BLE001 - the message reaches the driver, which fails with it
            return {**batch, "raw": [""] * n, "error": [f"teacher generation failed: {type(e).__name__}: {e}"] * n}
        return {**batch, "raw": [o.outputs[0].text for o in outs], "error": [""] * n}


def fill_stage(batch: dict, seed: int, source: str, real: frozenset[str] = frozenset()) -> dict:
    """The teacher's placeholders filled with fakes (the fakes' ranges are what the re-scan may find);
    `real`: the restricted values no fake may equal."""
    texts, inserted = [], []
    for i, j, raw in zip(batch["index"], batch["j"], batch["raw"], strict=True):
        rng = sample_rng(seed + 1, source, int(i), int(j))
        text, ranges = fill_placeholders(str(raw).strip(), Fakes(rng, real=real))
        texts.append(text)
        inserted.append(json.dumps(ranges))
    return {"index": batch["index"], "j": batch["j"], "text": texts, "inserted": inserted, "prompt": batch["prompt"],
            "error": batch["error"]}


class TeacherGenerator(Generator):
    strategy = "teacher"

    def __init__(self, cfg, storage_root: str):
        self.cfg = cfg
        self.uri, self.info = resolve_teacher(cfg, storage_root)
        try:
            from transformers import AutoConfig

            AutoConfig.from_pretrained(_local(self.uri))
        except Exception as e:  # noqa: BLE001 - checked before any generation
            raise SynthesizeError(f"teacher at {self.uri} cannot load: {type(e).__name__}: {e}") from None

    def describe(self) -> dict:
        return {"teacher": self.info, "prompt": self.cfg.prompt, "few_shot": self.cfg.few_shot,
                "sampling": {"temperature": self.cfg.temperature, "top_p": self.cfg.top_p,
                             "max_tokens": self.cfg.max_tokens}}

    def prompts(self, records, samples: int, seed: int, source: str) -> list[dict]:
        rows = []
        for r in records:
            for j in range(samples):
                rng = sample_rng(seed, source, r.index, j)
                others = [o for o in records if o.index != r.index]
                shots = rng.sample(others, min(self.cfg.few_shot, len(others)))
                examples = "".join(f"Example:\n{o.redacted}\n\n" for o in shots)
                prompt = self.cfg.prompt.replace("{examples}", examples).replace("{redacted}", r.redacted)
                rows.append({"index": r.index, "j": j, "prompt": prompt, "seed": rng.randrange(1 << 31)})
        return rows

    def run(self, records, samples: int, seed: int, source: str, batch_size: int):
        import ray.data

        c = self.cfg
        items = self.prompts(records, samples, seed, source)
        env = {"VLLM_CPU_KVCACHE_SPACE": f"{c.kv_cache_gib:g}", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        engine_cfg = {k: getattr(c, k) for k in ("max_model_len", "dtype", "max_tokens", "temperature", "top_p", "gpus")}
        return (
            ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // c.batch_size + 1, 64)))
            .map_batches(TeacherEngine, fn_constructor_kwargs={"uri": self.uri, "cfg": engine_cfg},
                         batch_size=c.batch_size, batch_format="numpy", concurrency=c.engines, num_cpus=c.cpus,
                         runtime_env={"env_vars": env}, **({"num_gpus": c.gpus} if c.gpus else {}))
            .map_batches(fill_stage, batch_size=batch_size, batch_format="numpy",
                         fn_kwargs={"seed": seed, "source": source, "real": self.real_values})
        )
