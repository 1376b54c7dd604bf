"""Fixtures for tests and benchmarks, kept out of the rooms that ship (Ray keeps its own in
`ray/serve/_private/test_utils.py` and `ray/llm/tests/serve/mocks/`):

    synthetic_dataset.write_synthetic_dataset   a prepared dataset in the contract format, self-describing rows
    tiny_versions.publish_tiny / build_tiny     tiny random-init registry versions with a real tokenizer
    fake_engine.FakeEngine                      a serving engine that stands in for vLLM in swap unit tests
    loadgen.Load                                constant client load on an endpoint
    local_head.LocalHead                        a real `ray start --head` on loopback, scoped to its processes

Nothing under `forge_ray/` outside this package imports it.
"""
