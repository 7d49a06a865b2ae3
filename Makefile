# Two entry points: `make demo` (the main job) and `make test`. Both set everything up first and are
# idempotent: apt packages, the virtualenv and the base model are only installed when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMPS := .make
APT_PACKAGES := espeak-ng pocketsphinx-testdata fortunes-de fortunes-es fortunes-it debian-reference-fr \
	chromium chromium-driver
# the corpus voices outside Debian's main component (scripts/install_voices.sh says how)
VOICE_PACKAGES := libttspico-utils mbrola mbrola-de6 mbrola-de7 mbrola-fr1 mbrola-fr4 mbrola-en1 mbrola-us1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test lint format clean

setup: $(STAMPS)/apt $(STAMPS)/voices $(STAMPS)/venv
	$(BIN)/ctxprune model prepare

$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing Debian packages: $$missing"; \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@touch $@

$(STAMPS)/voices: $(STAMPS)/apt
	scripts/install_voices.sh $(VOICE_PACKAGES)
	@touch $@

$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "ctxprune needs Python >= 3.11"'
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,base-model,ray,speaker]'
	@touch $@

demo: setup
	$(BIN)/ctxprune demo

test: setup
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/python -m pytest -q

format: $(STAMPS)/venv
	$(BIN)/ruff format src tests bench scripts
	$(BIN)/ruff check --fix src tests bench scripts

clean:
	rm -rf $(VENV) $(STAMPS)
