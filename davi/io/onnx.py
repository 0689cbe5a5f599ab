"""ONNX export of a mapper's one-step restore, and an ONNX Runtime restorer for infer.py and apps.

The graph is the whole DAVI sampler (Lee et al. 2024, Sec. 3: one network evaluation per sample),
including the operator's lift, so an app needs only the measurement and a noise draw:

    inputs   y      float32 (B, C, h, w)  the measurement, pixels in [-1, 1] (8x8 for SR x4 of 32x32)
             z      float32 (B, C+K, H, W) standard normal noise; a new draw = a new posterior sample
                                          (K: the export's noise_channels, usually 0)
    output   x_hat  float32 (B, C, H, W)  I_phi(lift(y) + h z, T - 1), not clamped (clamp to
                                          [-1, 1] for display, as infer.py does)

B is a dynamic axis; C, h, w, H, W are the export's (card.json). The file is ``mapper.onnx``
beside the safetensors, written atomically; its metadata repeats this convention and the card.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from davi.io.atomic import write_file
from davi.io.card import CARD, ExportCard
from davi.io.export import ExportError, load_export, read_card
from davi.io.model_card import ONNX_FILE, write_model_card
from davi.solvers.methods import Method, per_image_noise

OPSET = 17
INPUTS, OUTPUT = ("y", "z"), "x_hat"
INSTALL_HINT = "pip install 'davi[onnx]'"
CONVENTION = ("inputs y (B,C,h,w) measurement in [-1,1] and z (B,C+K,H,W) standard normal "
              "(K = the card's noise_channels); "
              "output x_hat (B,C,H,W) = I_phi(lift(y) + h z, T-1), unclamped; B dynamic")


class OnnxUnavailable(ExportError):
    """The optional ONNX packages are not installed (the message names the extra)."""


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise OnnxUnavailable(f"{module} is not installed: {INSTALL_HINT}") from None


class RestoreGraph(nn.Module):
    """(y, z) -> I_phi(lift(y) + h z, T - 1): what is traced into ONNX, and the PyTorch reference."""

    def __init__(self, mapper, operator):
        super().__init__()
        self.mapper, self.operator = mapper, operator

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.mapper.restore(self.operator.lift(y), z)


def _typed(card: ExportCard | dict) -> ExportCard:
    return ExportCard.coerce(card)


def example_inputs(card: ExportCard | dict, operator, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random (y, z) pair of the export's shapes (``card``: its ExportCard, or card.json as a dict)."""
    card = _typed(card)
    image_shape = (batch, card.channels, card.resolution, card.resolution)
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(operator.measurement_shape(image_shape), generator=g) * 2 - 1
    return y, torch.randn(z_shape(card, batch), generator=g)


def z_shape(card: ExportCard | dict, batch: int) -> tuple[int, ...]:
    """The noise input's shape: the image's channels, then the export's noise channels."""
    card = _typed(card)
    return (batch, card.channels + card.noise_channels, card.resolution, card.resolution)


def _onnx_bytes(graph: RestoreGraph, inputs: tuple[torch.Tensor, torch.Tensor], card: ExportCard) -> bytes:
    onnx = _require("onnx")
    buf = io.BytesIO()
    # The TorchScript-based exporter (dynamo=False): a single self-contained file, seconds to export,
    # no onnxscript needed. diffusers' shape checks (e.g. "batch >= 64 -> contiguous") become
    # constants; they do not change values, and the parity tests cover batch sizes on both sides.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, inputs, buf, input_names=list(INPUTS), output_names=[OUTPUT],
                          dynamic_axes={n: {0: "batch"} for n in (*INPUTS, OUTPUT)},
                          opset_version=OPSET, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    # the exporter leaves the output's C, H, W symbolic; they are the image's (only B varies)
    image = (card.channels, card.resolution, card.resolution)
    for dim, size in zip(model.graph.output[0].type.tensor_type.shape.dim[1:], image):
        dim.dim_value = size
    meta = {"davi.convention": CONVENTION, "davi.task": card.task,
            "davi.card": json.dumps({k: v for k, v in card.to_dict().items() if k != "config"})}
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def export_onnx(export_dir: str | Path, tolerance: float = 1e-4) -> Path:
    """Write ``<export_dir>/mapper.onnx`` from the export's safetensors (and refresh its model card);
    check it against PyTorch with ONNX Runtime when that is installed (ExportError beyond ``tolerance``)."""
    mapper, raw, operator = load_export(export_dir)
    card = ExportCard.from_dict(raw, str(Path(export_dir) / CARD))
    graph = RestoreGraph(mapper, operator).eval()
    inputs = example_inputs(card, operator)
    data = _onnx_bytes(graph, inputs, card)
    try:
        session = make_session(data)
    except OnnxUnavailable:
        session = None
    if session is not None:
        y, z = example_inputs(card, operator, batch=3, seed=1)
        with torch.no_grad():
            diff = float((run_session(session, y, z) - graph(y, z)).abs().max())
        if not diff <= tolerance:
            raise ExportError(f"{export_dir}: ONNX graph differs from PyTorch by {diff:.2e} (> {tolerance:g})")
    path = write_file(Path(export_dir) / ONNX_FILE, lambda tmp: tmp.write_bytes(data))
    write_model_card(export_dir, card)  # the card now lists mapper.onnx and its input convention
    return path


def make_session(model: str | Path | bytes, threads: int | None = None, spin: bool = True):
    """An ONNX Runtime CPU session; ``threads`` intra-op threads (default: torch's thread count).
    ``spin=False`` makes idle worker threads sleep instead of busy-waiting (kinder to a shared CPU)."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_session(session, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    feed = {INPUTS[0]: y.detach().float().cpu().numpy(), INPUTS[1]: z.detach().float().cpu().numpy()}
    return torch.from_numpy(session.run([OUTPUT], feed)[0])


def onnx_path(export_dir: str | Path) -> Path:
    """The export's mapper.onnx; ExportError naming the command that writes it when absent."""
    path = Path(export_dir) / ONNX_FILE
    if not path.is_file():
        read_card(export_dir)  # a missing or broken export is reported as such first
        raise ExportError(f"{path}: missing; add it with `davi onnx --export {export_dir}`")
    return path


class OnnxDaviMethod(Method):
    """davi.solvers.methods.DaviMethod through ONNX Runtime (CPU): same seeds -> same noise -> the same samples as PyTorch."""

    name = "davi-onnx"
    nfe_per_sample = 1
    stochastic = True

    def __init__(self, export_dir: str | Path, operator, threads: int | None = None):
        path = onnx_path(export_dir)
        _require("onnxruntime")  # a missing runtime is the install hint, not a load error
        try:
            self.session = make_session(path, threads)
        except Exception as e:  # onnxruntime raises its own (pybind) exception types
            raise ExportError(f"{path}: not loadable by ONNX Runtime ({str(e).splitlines()[0][:200]})") from None
        self.card = ExportCard.read(export_dir)

    @torch.no_grad()
    def __call__(self, y, seeds, num_samples=1):
        shape = z_shape(self.card, y.shape[0])
        out = [run_session(self.session, y, per_image_noise(shape, seeds, salt=k)).clamp(-1, 1)
               for k in range(num_samples)]
        return torch.stack(out).to(y.device)
