"""Held-out perplexity per domain, on the eval split the prepare stage set aside.

The eval shards of each source are cut into units of `sequences_per_task` rows, each scored by a
Ray task (`workers` in flight at once); a worker process keeps the version it loaded, so the
next unit on it does not load it again. Packed sequences hold
several documents: attention is block-diagonal per document (from `position_ids`, which restart
at 0 at each document start), a document's first token is not scored (it would be predicted
from the previous document) and padding is never scored, so the number is what the model gives
one document at a time, as it is served.

Legend: B batch, T seq_len, V vocabulary.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

from forge_ray.eval.model_files import EvalError, load_hf_model, local_model_dir
from forge_ray.eval.report import DomainPerplexity

if TYPE_CHECKING:
    from forge_ray.prepare.dataset import PreparedDataset

log = logging.getLogger(__name__)


def document_mask(position_ids_BT):
    """[B, 1, T, T] bool: causal attention within the document each token belongs to."""
    import torch

    seg_BT = torch.cumsum((position_ids_BT == 0).long(), dim=1)
    T = position_ids_BT.shape[1]
    causal_TT = torch.tril(torch.ones(T, T, dtype=torch.bool, device=position_ids_BT.device))
    return ((seg_BT[:, :, None] == seg_BT[:, None, :]) & causal_TT)[:, None]


def nll_sums(model, input_ids_BT, position_ids_BT, pad_token_id: int) -> tuple[float, int]:
    """(sum of -log p over scored targets, number of scored targets) for one batch."""
    import torch

    with torch.inference_mode():
        logits_BTV = model(input_ids_BT, position_ids=position_ids_BT,
                           attention_mask=document_mask(position_ids_BT)).logits
        logp = torch.log_softmax(logits_BTV[:, :-1].float(), dim=-1)
        target_BT = input_ids_BT[:, 1:]
        nll_BT = -logp.gather(-1, target_BT[..., None]).squeeze(-1)
        scored_BT = (position_ids_BT[:, 1:] != 0) & (target_BT != pad_token_id)
        return float(nll_BT[scored_BT].sum()), int(scored_BT.sum())


_LOADED: dict[str, object] = {}  # per worker process: the last version loaded, by URL


def _model(model_url: str, threads: int):
    """The version, loaded once per worker process (versions are immutable, so the URL is a key).

    Ray reuses worker processes across tasks: the next unit (and the next evaluation) on the
    same process skips importing torch and loading the weights again.
    """
    import torch

    torch.set_num_threads(threads)
    if model_url not in _LOADED:
        _LOADED.clear()
        with local_model_dir(model_url) as path:
            device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU when the task was given one
            _LOADED[model_url] = load_hf_model(path).to(device)
    return _LOADED[model_url]


def score_unit(model_url: str, dataset: PreparedDataset, source: str, shard_uri: str, start: int, stop: int,
               batch_size: int, threads: int) -> dict:
    """One unit of work (a Ray task): rows [start, stop) of one eval shard."""
    import torch

    model = _model(model_url, threads)
    table = dataset.read_shard(shard_uri).slice(start, stop - start)
    ids = torch.tensor(table.column("input_ids").to_pylist(), dtype=torch.long, device=model.device)
    pos = torch.tensor(table.column("position_ids").to_pylist(), dtype=torch.long, device=model.device)
    nll, tokens = 0.0, 0
    for i in range(0, len(ids), batch_size):
        n, t = nll_sums(model, ids[i : i + batch_size], pos[i : i + batch_size], dataset.pad_token_id)
        nll, tokens = nll + n, tokens + t
    return {"source": source, "nll": nll, "tokens": tokens, "sequences": len(ids)}


def work_units(dataset: PreparedDataset, source: str, max_sequences: int, per_unit: int) -> list[tuple[str, int, int]]:
    """(shard URI, first row, end row) units covering the first `max_sequences` eval rows."""
    units, left = [], max_sequences
    for entry, uri in zip(dataset.shards(source, "eval"), dataset.shard_paths(source, "eval"), strict=True):
        rows = min(int(entry["rows"]), left)
        units += [(uri, s, min(s + per_unit, rows)) for s in range(0, rows, per_unit)]
        left -= rows
        if left <= 0:
            break
    return units


def _routed_whole(dataset: PreparedDataset, source: str) -> bool:
    """A restricted source: every record went to `restricted/`, none to the shards (nothing to score)."""
    entry = dataset.manifest["sources"][source]
    return bool(entry.get("restricted_records")) and not any(
        dataset.num_sequences(source, sp) for sp in ("train", "eval"))


def perplexity_by_domain(model_url: str, dataset: PreparedDataset, config) -> dict[str, DomainPerplexity]:
    """{source: {perplexity, nll_per_token, tokens, sequences}} on the eval split, on the cluster.

    `config` is `eval.perplexity`. Raises EvalError if the version does not load or a source has
    no eval sequences; a restricted source (every record routed to `restricted/`) is skipped.
    """
    import ray

    units = []
    sources = [s for s in dataset.sources if not _routed_whole(dataset, s)]
    for source in sources:
        mine = work_units(dataset, source, config.max_sequences, config.sequences_per_task)
        if not mine:
            raise EvalError(f"dataset {dataset.dataset}/{dataset.version} has no eval sequences for {source!r}")
        units += [(source, *u) for u in mine]
    started = time.monotonic()
    task = ray.remote(num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker)(score_unit)
    dataset_ref = ray.put(dataset)
    pending: list = []
    parts: list[dict] = []  # score_unit's results
    try:
        for unit in units:  # at most `workers` tasks in flight: a window, not a flood
            if len(pending) >= config.workers:
                done, pending = ray.wait(pending, num_returns=1)
                parts += ray.get(done)
            pending.append(task.remote(model_url, dataset_ref, *unit, config.batch_size, config.threads_per_worker))
        parts += ray.get(pending)
    except ray.exceptions.RayTaskError as e:
        for ref in pending:
            ray.cancel(ref)
        cause = e.cause if isinstance(e.cause, EvalError) else f"{type(e.cause).__name__}: {e.cause}"
        raise EvalError(str(cause)) from None
    out: dict[str, DomainPerplexity] = {}
    for source in sources:
        scored = [p for p in parts if p["source"] == source]
        nll, tokens = sum(p["nll"] for p in scored), sum(p["tokens"] for p in scored)
        if tokens == 0:
            raise EvalError(f"no scorable tokens in the eval split of {source!r}")
        out[source] = {"perplexity": math.exp(nll / tokens), "nll_per_token": nll / tokens,
                       "tokens": tokens, "sequences": sum(p["sequences"] for p in scored)}
    log.info("perplexity of %d domains (%d units, %d in parallel) in %.1f s: %s", len(out), len(units),
             config.workers, time.monotonic() - started,
             ", ".join(f"{s} {r['perplexity']:.2f}" for s, r in out.items()))
    return out
