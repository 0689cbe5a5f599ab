"""Let torchvision's pure-Python part import beside a CPU-only torch.

PyPI's Linux torchvision wheels are CUDA builds: their compiled ops (``_C.so``) link
against ``libtorch_cuda.so`` and fail to load beside the CPU torch wheel. torchvision then
still calls ``torch.library.register_fake("torchvision::nms")`` at import, which raises
``operator torchvision::nms does not exist`` and takes down every import of torchvision,
lpips and torchmetrics with it. DAVI needs none of torchvision's compiled ops (lpips only
builds VGG/AlexNet from ``torchvision.models``), so when the extension cannot load we
declare the schemas of the two ops that torchvision registers unconditionally. Calling
them raises a clear error; everything else in torchvision works. With a matching
torchvision (e.g. a CUDA torch) the extension loads and this does nothing.

Two ways in: ``import davi`` installs an import hook that runs the fix just before
torchvision is first imported, and ``make install`` writes a one-line ``.pth`` file into
the venv (``python -m davi._torchvision_compat --install-pth``) so that plain
``import lpips`` / ``import torchmetrics`` / ``from diffusers import UNet2DModel`` work in
any script, without importing davi first. Neither imports torch until torchvision is.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import sysconfig
from pathlib import Path

# The ops that torchvision/_meta_registrations.py registers without checking _has_ops().
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY = None  # keeps the torch.library.Library alive for the process lifetime


def _op_exists(name: str) -> bool:
    import torch

    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def ensure_torchvision_importable() -> bool:
    """Declare torchvision's op schemas if its compiled extension is unusable.

    Returns True when the shim was applied. Safe to call more than once.
    """
    global _LIBRARY
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.submodule_search_locations is None:
        return False
    import torch

    if all(_op_exists(n) for n in _SCHEMAS):
        return False
    # Try the real extension first: if it loads, the real schemas are there.
    for loc in spec.submodule_search_locations:
        for so in Path(loc).glob("_C*.so"):
            try:
                torch.ops.load_library(str(so))
            except (OSError, RuntimeError):
                pass
    missing = [n for n in _SCHEMAS if not _op_exists(n)]
    if not missing:
        return False
    if _LIBRARY is None:
        _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")  # noqa: TOR901
    for name in missing:
        _LIBRARY.define(_SCHEMAS[name])
    return True


class _TorchvisionImportHook(importlib.abc.MetaPathFinder):
    """Runs the fix once, just before the first ``import torchvision``; finds nothing itself."""

    def find_spec(self, fullname, path, target=None):  # noqa: D401
        if fullname == "torchvision":
            uninstall_import_hook()
            try:
                ensure_torchvision_importable()
            except Exception:  # never break an import over the shim; torchvision reports its own error
                pass
        return None


def install_import_hook() -> None:
    if "torchvision" in sys.modules:
        return
    if not any(isinstance(f, _TorchvisionImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionImportHook())


def uninstall_import_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TorchvisionImportHook)]


PTH_NAME = "davi_torchvision_compat.pth"


def install_pth(site_packages: str | None = None) -> Path:
    """Write the .pth that installs the hook at interpreter start (site-packages of this env)."""
    from davi.io.atomic import write_text

    target = Path(site_packages or sysconfig.get_paths()["purelib"]) / PTH_NAME
    write_text(target, "import davi._torchvision_compat\n")
    return target


if __name__ == "__main__":
    if sys.argv[1:] == ["--install-pth"]:
        print(f"wrote {install_pth()}")
    else:
        print("usage: python -m davi._torchvision_compat --install-pth", file=sys.stderr)
        sys.exit(2)
