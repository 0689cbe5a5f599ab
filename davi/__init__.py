"""DAVI: one-step image restoration with an amortized posterior sampler trained against a diffusion prior."""

from davi import _torchvision_compat

# Cheap (no torch import): makes the next `import torchvision` work beside a CPU torch.
_torchvision_compat.install_import_hook()

__version__ = "0.1.0"
