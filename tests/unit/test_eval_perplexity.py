"""Perplexity of packed sequences equals perplexity of their documents scored one at a time."""

from __future__ import annotations

import torch

from forge_ray.eval.perplexity import nll_sums, work_units


def tiny_llama(vocab=64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def doc_nll(model, doc: list[int]) -> tuple[float, int]:
    with torch.inference_mode():
        logits = model(torch.tensor([doc])).logits[0, :-1]
        logp = torch.log_softmax(logits, dim=-1)
        return float(-logp[torch.arange(len(doc) - 1), torch.tensor(doc[1:])].sum()), len(doc) - 1


def test_packed_sequence_scores_each_document_on_its_own():
    model = tiny_llama()
    pad = 0
    docs = [[5, 9, 11, 3, 2], [7, 7, 8, 2], [4, 12, 13]]
    # Two packed rows of 8: documents back to back, positions restart at 0, then padding.
    ids = [docs[0] + docs[1][:3], docs[1][3:] + docs[2] + [pad] * 4]
    pos = [[0, 1, 2, 3, 4, 0, 1, 2], [3, 0, 1, 2, 0, 1, 2, 3]]
    nll, n = nll_sums(model, torch.tensor(ids), torch.tensor(pos), pad)
    # Row 2 starts mid-document: its first token has no context in the row, so it is not scored,
    # exactly like the first token of a document.
    expected = [doc_nll(model, docs[0]), doc_nll(model, docs[1][:3]), doc_nll(model, docs[2])]
    assert n == sum(k for _, k in expected) == 4 + 2 + 2
    assert abs(nll - sum(v for v, _ in expected)) < 1e-4


class FakeDataset:
    def shards(self, source, split):
        return [{"rows": 50}, {"rows": 30}]

    def shard_paths(self, source, split):
        return ["s0", "s1"]


def test_work_units_cover_the_first_rows_once():
    assert work_units(FakeDataset(), "docs", 70, 32) == [("s0", 0, 32), ("s0", 32, 50), ("s1", 0, 20)]
    assert work_units(FakeDataset(), "docs", 1000, 100) == [("s0", 0, 50), ("s1", 0, 30)]
