"""Image metrics: real or absent.

PSNR and SSIM come from torchmetrics on pixels in [-1, 1] (data range 2). LPIPS and FID need
backbone weights (torchvision's VGG/AlexNet, torch-fidelity's Inception) that cannot be
downloaded here: when they are not on disk the metric is reported as unavailable, with the
reason, never computed with random weights under its name.
"""

from __future__ import annotations

from pathlib import Path

import torch

# torchvision's file names for the LPIPS backbones (in torch.hub's checkpoints folder).
LPIPS_BACKBONES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
FID_INCEPTION = "weights-inception-2015-12-05-6726825d.pth"


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, (B,)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(pred.float().clamp(-1, 1), target.float(), data_range=2.0,
                                   reduction="none", dim=(1, 2, 3))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM, (B,). The Gaussian window shrinks for images smaller than 16 px."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    k = 11 if min(pred.shape[-2:]) >= 16 else 5
    return structural_similarity_index_measure(pred.float().clamp(-1, 1), target.float(), data_range=2.0,
                                               reduction="none", kernel_size=k)


def _hub_checkpoint(name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def lpips_status(net: str = "alex") -> tuple[bool, str]:
    path = _hub_checkpoint(LPIPS_BACKBONES[net])
    if path.is_file():
        return True, str(path)
    return False, f"LPIPS-{net} unavailable: backbone weights not on disk ({path})"


class LPIPSMetric:
    """LPIPS with the lpips package, only when its backbone weights are on disk."""

    def __init__(self, net: str = "alex", device: str | torch.device = "cpu"):
        ok, reason = lpips_status(net)
        if not ok:
            raise FileNotFoundError(reason)
        import lpips

        self.model = lpips.LPIPS(net=net, verbose=False).to(device).eval()

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape[1] == 1:  # the backbones take RGB
            pred, target = pred.repeat(1, 3, 1, 1), target.repeat(1, 3, 1, 1)
        return self.model(pred.float().clamp(-1, 1), target.float()).flatten()


def fid_status() -> tuple[bool, str]:
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        return False, "FID unavailable: torch-fidelity is not installed and its Inception weights are not on disk"
    path = _hub_checkpoint(FID_INCEPTION)
    if path.is_file():
        return True, str(path)
    return False, f"FID unavailable: Inception weights not on disk ({path})"


def score_restorations(restored: torch.Tensor, reference: torch.Tensor, classifier: bool = True,
                       lpips_net: str = "alex", explain_absent: bool = True, batch_size: int = 64) -> dict:
    """Every metric that can be computed honestly here, averaged over the images (N, C, H, W).

    ``psnr``, ``ssim``; ``lpips_<net>`` when its backbone weights are on disk; ``classifier_fd``
    (Frechet distance in the digit classifier's features, not FID) and ``kid``/``kid_std`` (the
    kernel distance in the same features, davi.models.classifier.classifier_kid) for 1x32x32 digits when
    ``classifier``. A metric that cannot be computed is absent, or, with ``explain_absent``, a
    string saying why (``fid`` always is: it is computed by an external tool).
    """
    out: dict = {
        "psnr": float(psnr(restored, reference).mean()),
        "ssim": float(ssim(restored, reference).mean()),
    }
    absent = {}
    ok, reason = lpips_status(lpips_net)
    if ok:
        metric = LPIPSMetric(lpips_net)
        out[f"lpips_{lpips_net}"] = float(torch.cat([metric(restored[i:i + batch_size], reference[i:i + batch_size])
                                                     for i in range(0, len(restored), batch_size)]).mean())
    else:
        absent[f"lpips_{lpips_net}"] = reason
    ok, reason = fid_status()
    # torchmetrics' FID needs torch-fidelity's Inception weights; on the embedded default's 32x32
    # digits FID is not meaningful anyway (see classifier_frechet). Say which case this is.
    absent["fid"] = ("unavailable here: weights found but FID is computed by the external `fidelity` tool "
                     "(docs/paper_setting.md)") if ok else reason
    if classifier:
        if tuple(restored.shape[1:]) == (1, 32, 32):
            from davi.models.classifier import classifier_realism, load_classifier

            out.update(classifier_realism(load_classifier(), restored, reference))
        else:
            absent["classifier_fd"] = "only defined for 1x32x32 digits (the embedded default)"
    return {**out, **absent} if explain_absent else out
