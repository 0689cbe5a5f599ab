"""Mutations of the ONNX export and runtime (davi/io/onnx.py)."""

from benchmarks.mutate import Mutation

ONNX = "davi/io/onnx.py"
PARITY = "tests/test_onnx.py::test_an_onnx_graph_that_disagrees_with_pytorch_is_refused"

MUTATIONS = [
    Mutation("onnx_parity_check_ignored", ONNX, "if not diff <= tolerance:", "if False:", PARITY,
             "an ONNX graph that disagrees with PyTorch beyond the tolerance is refused"),
    Mutation("onnx_parity_tolerance_not_passed", ONNX, "def export_onnx(export_dir: str | Path, tolerance: float = 1e-4)",
             "def export_onnx(export_dir: str | Path, tolerance: float = 1e-2)", PARITY, "the default tolerance is 1e-4"),
    Mutation("onnx_z_shape_without_noise_channels", ONNX,
             "return (batch, card.channels + card.noise_channels, card.resolution, card.resolution)",
             "return (batch, card.channels, card.resolution, card.resolution)",
             "tests/test_onnx.py::test_an_export_with_noise_channels_runs_in_onnx_and_its_card_is_checked",
             "z carries the image's channels and the export's noise channels"),
    Mutation("onnx_graph_lift_is_the_adjoint", ONNX, "return self.mapper.restore(self.operator.lift(y), z)",
             "return self.mapper.restore(self.operator.adjoint(y), z)",
             "tests/test_onnx.py::test_onnx_method_reproduces_the_pytorch_samples",
             "the graph lifts y as DaviMethod does (A^T y is not lift(y))"),
    Mutation("onnx_method_same_noise_for_every_sample", ONNX, "per_image_noise(shape, seeds, salt=k)",
             "per_image_noise(shape, seeds, salt=0)", "tests/test_onnx.py::test_onnx_method_reproduces_the_pytorch_samples",
             "sample k uses noise salt k, as DaviMethod does"),
]
