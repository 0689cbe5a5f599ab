# Two commands for a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install the project on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is pinned in the same pip command as everything else: 2.13.0 has a CPU
# wheel on this kind of machine, while an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: install test demo prior app clean-venv

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q "$(TORCH_PIN)" -e ".[dev]"
	$(PY) -m davi._torchvision_compat --install-pth
	touch $@

test: install
	$(PY) -m pytest -q

# The main job on the embedded default (MNIST 32x32, shipped prior): see README.
demo: install
	$(VENV)/bin/davi demo $(ARGS)

# The restoration web page on http://127.0.0.1:$${DAVI_APP_PORT:-7860} (loopback only): see README.
app: install
	$(VENV)/bin/davi app $(ARGS)

# Retrain the embedded prior from scratch (hours on 2 CPU cores; resumable).
prior: install
	$(VENV)/bin/accelerate launch --num_processes 1 --cpu -m davi train --config configs/prior_mnist.yaml $(ARGS)

clean-venv:
	rm -rf $(VENV)
