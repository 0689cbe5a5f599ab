"""``davi app``: a restoration web page for the shipped DAVI mappers (Gradio), on 127.0.0.1 only.

    davi app                          # http://127.0.0.1:7860 (also: make app, python app.py)
    davi app --port 7861              # or DAVI_APP_PORT=7861 davi app

Pick a task (the mappers in davi/assets/mappers), then a held-out test digit, a drawing, or an
uploaded image (a clean 32x32 digit, degraded here with the task's operator, or a measurement of
the operator's shape). The page shows the measurement, K samples of the one-step mapper
x = I_phi(lift(y) + h z, T - 1) (Lee et al. 2024), their mean and per-pixel standard deviation
(a posterior std only for mappers trained with the sampler objective; the page says which), the
measurement-consistency statistic when the library and card provide one, the time
per image, and on request RED-Diff with 100 prior evaluations (Mardani et al. 2023) for comparison.
Mappers, digits and the prior load on first use, so the page is up as soon as Gradio is.
Needs the optional extra: pip install 'davi[app]'.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline machines: no telemetry requests

import davi  # noqa: E402  (torchvision shim before anything imports it)

HELP = "the restoration web page for the shipped mappers (Gradio, loopback only; pip install 'davi[app]')"
MAPPERS = Path(davi.__file__).resolve().parent / "assets" / "mappers"
# RED-Diff's per-task tuning, written by benchmarks/compare.py in a source checkout (not installed):
# looked up under the working directory, then beside the package (an editable install's repository)
COMPARE_RESULTS = Path("benchmarks") / "results" / "compare.json"
SEARCH_ROOTS = (Path.cwd, lambda: Path(davi.__file__).resolve().parent.parent)
HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # a 32x32 digit is a few hundred bytes; anything near this is not one
DISPLAY_PX = 128  # digits are shown enlarged (nearest neighbour) so single pixels stay visible
IMAGE_PX = 170  # height of an image box on the page
TASK_ORDER = ("sr4", "deblur", "box")  # the README's order; other exports follow alphabetically
RED_DIFF_STEPS = 100
TEST_DIGITS = 1000


class AppInputError(ValueError):
    """Something the visitor gave that cannot be restored; the message is shown on the page."""


# ---------------------------------------------------------------------------------------------
# models and data, loaded once on first use
# ---------------------------------------------------------------------------------------------
def task_choices() -> list[tuple[str, str]]:
    """(label, folder name) of every shipped mapper, from its card.json alone: no weights are loaded
    until a task is used (Restorer.from_pretrained loads them then)."""
    from davi.io.card import ExportCard
    from davi.io.model_card import describe_task

    folders = sorted((p.name for p in MAPPERS.iterdir() if (p / "card.json").is_file()),
                     key=lambda n: (TASK_ORDER.index(n) if n in TASK_ORDER else len(TASK_ORDER), n))
    return [(f"{name}: {describe_task(ExportCard.read(MAPPERS / name))}", name) for name in folders]


@lru_cache(maxsize=None)
def load_task(task: str) -> davi.Restorer:
    """The :class:`davi.Restorer` of a shipped mapper, one per task, warmed up (first-call overhead
    excluded from the times the page shows)."""
    import torch

    restorer = davi.Restorer.from_pretrained(MAPPERS / task)
    restorer(restorer.operator.measure(torch.zeros(restorer.image_shape(1))), progress=False)
    return restorer


@lru_cache(maxsize=None)
def test_digits(data_key: tuple):
    """The held-out test split the mappers were trained without (as `davi restore --input mnist32:test`)."""
    from davi.data.inputs import load_named_images

    data = dict(data_key)
    return load_named_images(f"{data['source']}:test", data["channels"], data["resolution"], TEST_DIGITS, data).images


def red_diff_tuning(task: str) -> tuple[dict, str]:
    """RED-Diff's lr and lambda as tuned per task by benchmarks/compare.py, when its results are here
    (the export card's defaults are untuned and make a weak baseline)."""
    for root in (f() for f in SEARCH_ROOTS):
        try:
            tuned = json.loads((root / COMPARE_RESULTS).read_text())["tuning"][task]
            return {"lr": float(tuned["lr"]), "lam": float(tuned["lam"])}, f"tuned in {COMPARE_RESULTS}"
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return {}, "the export card's settings"


@lru_cache(maxsize=None)
def load_red_diff(task: str):
    """(RedDiffMethod with RED_DIFF_STEPS steps, a note on where its lr and lambda come from)."""
    from davi.builders import red_diff_settings
    from davi.solvers.methods import RedDiffMethod

    restorer = load_task(task)  # its prior is the one the mapper was trained against
    tuned, where = red_diff_tuning(task)
    settings = red_diff_settings(restorer.card.red_diff, **tuned, num_steps=RED_DIFF_STEPS)
    method = RedDiffMethod(restorer.prior, restorer.operator, **settings)
    return method, f"lr {settings['lr']:g}, lambda {settings['lam']:g}: {where}"


# ---------------------------------------------------------------------------------------------
# inputs -> (clean image or None, measurement)
# ---------------------------------------------------------------------------------------------
def digit_from_drawing(drawing, resolution: int):
    """A sketch (dark strokes on white) as a digit like the training data: light strokes on black,
    fitted into the central 20/32 of the frame (as MNIST digits are), pixels in [-1, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    composite = drawing.get("composite") if isinstance(drawing, dict) else drawing
    if composite is None:
        raise AppInputError("The drawing is empty: draw a digit on the canvas first.")
    ink = 255 - np.asarray(Image.fromarray(np.asarray(composite).astype(np.uint8)).convert("L"), dtype=np.float32)
    rows, cols = np.nonzero(ink > 25)
    if rows.size == 0:
        raise AppInputError("The drawing is empty: draw a digit on the canvas first.")
    crop = Image.fromarray(ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1].astype(np.uint8))
    box = round(resolution * 20 / 32)
    scale = box / max(crop.size)
    crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.LANCZOS)
    frame = Image.new("L", (resolution, resolution), 0)
    frame.paste(crop, ((resolution - crop.width) // 2, (resolution - crop.height) // 2))
    return torch.from_numpy(np.asarray(frame, dtype=np.float32))[None, None] / 127.5 - 1


def image_from_upload(path, card: davi.ExportCard, operator, as_measurement: bool):
    """(clean image or None, measurement or None) from an uploaded file; AppInputError on anything else."""
    from davi.data.datasets import DataError
    from davi.io.images import read_image

    if not path:
        raise AppInputError("No file uploaded yet: choose an image file.")
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise AppInputError(f"{path.name} is {size / 2**20:.1f} MB; uploads are limited to "
                            f"{MAX_UPLOAD_BYTES // 2**20} MB (a {card.resolution}x{card.resolution} digit is a few hundred bytes).")
    try:
        image = read_image(path, card.channels)[None]
    except DataError as e:
        raise AppInputError(f"{path.name} is not a readable image ({str(e).rsplit('(', 1)[-1].rstrip(')')}). "
                            "Upload a PNG or JPEG.") from None
    c, r = card.channels, card.resolution
    measured = tuple(operator.measurement_shape((1, c, r, r)))
    got = tuple(image.shape)
    if got == measured and (as_measurement or measured != (1, c, r, r)):
        return None, image
    if got == (1, c, r, r) and not as_measurement:
        return image, None
    raise AppInputError(f"{path.name} is {got[3]}x{got[2]}; this task takes a {r}x{r} digit (degraded here) "
                        f"or a {measured[3]}x{measured[2]} measurement.")


def measurement(task, source, index, drawing, upload, as_measurement, seed):
    """(truth or None, measurement y (1, C, h, w), the task's Restorer) for the chosen input."""
    import torch

    restorer = load_task(task)
    card, operator = restorer.card, restorer.operator
    if source == "upload":
        x, y = image_from_upload(upload, card, operator, as_measurement)
    elif source == "drawing":
        x, y = digit_from_drawing(drawing, card.resolution), None
    else:
        key = tuple(sorted({"source": "mnist32", "channels": card.channels, "resolution": card.resolution,
                            **card.trained_data}.items()))
        digits = test_digits(key)
        x, y = digits[int(index) % len(digits)][None], None
    if y is None:  # simulate the measurement y = A x + sigma_y n, seeded so reruns match
        y = operator.measure(x, generator=torch.Generator().manual_seed(int(seed)))
    return x, y, restorer


# ---------------------------------------------------------------------------------------------
# the two actions
# ---------------------------------------------------------------------------------------------
def show(image):
    """A (C, H, W) image in [-1, 1] as an enlarged PIL image."""
    from PIL import Image

    from davi.io.images import to_uint8

    return Image.fromarray(to_uint8(image)).resize((DISPLAY_PX, DISPLAY_PX), Image.NEAREST)


def spread_note(card: davi.ExportCard) -> str:
    """What the samples' spread means for this export's training objective."""
    from davi.io.model_card import objective

    if objective(card) == "paired":
        return ("Objective *paired* (the paper's recipe): a point estimator, so the samples' spread is "
                "not a posterior std.")
    return f"Objective *{objective(card)}*: the spread estimates the posterior std."


def consistency_line(out, threshold: float | None) -> str:
    """The first sample's consistency statistic (``out``: the Restorer's answer for one image) and the
    card's threshold; nothing when there is no statistic (sigma_y = 0: no noise scale)."""
    if out.consistency is None:
        return ""
    r = float(out.consistency[0])
    if threshold is None:
        return f"**Consistency** r = ‖A x − y‖² / (M σ²) = {r:.2f} (≈ 1 for a consistent answer; no threshold in this card)"
    verdict = "**above** — do not trust the one-step answer; try RED-Diff" if out.flagged[0] else "within"
    return f"**Consistency** r = {r:.2f}, {verdict} the card's threshold {threshold:.2f}"


def restore(task, source, index, drawing, upload, as_measurement, seed, samples):
    """The DAVI button: K samples of the task's Restorer, their mean, std and consistency, and the times."""
    from davi.eval.metrics import psnr
    from davi.io.images import display_measurement

    x, y, restorer = measurement(task, source, index, drawing, upload, as_measurement, seed)
    k = int(samples)
    out = restorer(y, samples=k, seed=int(seed), progress=False)
    seconds = sum(s for s, _ in out.batch_seconds)  # the mapper's time, not the statistic's
    restored, mean, std = out.samples[:, 0], out.mean[0], out.std[0]  # (K, C, H, W), (C, H, W), (C, H, W)
    scale = float(std.max().clamp_min(1e-8))
    lifted = restorer.operator.lift(y)[0]
    shown_y = display_measurement(y, lifted[None])[0]
    lines = [f"**DAVI**: {k} sample{'s' if k > 1 else ''} in {seconds * 1000:.1f} ms "
             f"({seconds * 1000 / k:.1f} ms per image and sample, 1 network evaluation each, CPU)"]
    if x is not None:
        lines.append(f"PSNR of the mean vs the clean digit: {float(psnr(mean[None], x)[0]):.2f} dB "
                     f"(lift(y): {float(psnr(lifted[None], x)[0]):.2f} dB)")
    lines.append(f"std map scaled to its maximum, {scale:.3f}. " + spread_note(restorer.card))
    consistency = consistency_line(out, restorer.threshold)
    if consistency:
        lines.append(consistency)
    gallery = [(show(s), f"sample {i + 1}") for i, s in enumerate(restored)]
    truth = show(x[0]) if x is not None else None
    return (show(shown_y), show(lifted), gallery, show(mean), show(std / scale * 2 - 1), truth,
            "\n\n".join(lines), "")


def red_diff(task, source, index, drawing, upload, as_measurement, seed):
    from davi.eval.metrics import psnr

    x, y, _ = measurement(task, source, index, drawing, upload, as_measurement, seed)
    method, settings = load_red_diff(task)
    t0 = time.perf_counter()
    out = method(y, [int(seed)], 1)[0]
    seconds = time.perf_counter() - t0
    line = f"**RED-Diff-{RED_DIFF_STEPS}**: {seconds:.2f} s per image ({RED_DIFF_STEPS} network evaluations, CPU)"
    if x is not None:
        line += f"; PSNR vs the clean digit {float(psnr(out, x)[0]):.2f} dB"
    line += f"\n\n{settings}"
    return show(out[0]), line, ""


def on_page(fn, n_outputs: int):
    """Run ``fn``; a bad input or any failure becomes a message in the status box, never a traceback."""
    import gradio as gr

    def run(*args):
        try:
            return fn(*args)
        except AppInputError as e:
            message = str(e)
        except ValueError as e:  # the library's one-line errors (DataError, ExportError, ...)
            message = str(e)
        except Exception as e:  # noqa: BLE001  (the visitor gets one line; the log gets the rest)
            traceback.print_exc()
            message = f"Internal error ({e.__class__.__name__}); details are in the server's log."
        shown = f"⚠️ {message}"
        return shown if n_outputs == 1 else (*[gr.skip()] * (n_outputs - 1), shown)

    return run


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------
def build_page():
    import gradio as gr

    choices = task_choices()
    with gr.Blocks(title="DAVI: one-step restoration") as page:
        gr.Markdown("# DAVI: one-step image restoration\n"
                    "A mapper trained against a diffusion prior restores a measurement in one network "
                    "evaluation; different noise draws z give different samples.")
        source = gr.State("test digit")
        with gr.Row():
            task = gr.Dropdown(choices, value=choices[0][1], label="Task", elem_id="task")
            samples = gr.Slider(1, 16, value=8, step=1, label="Samples K (noise draws z)", elem_id="samples")
            seed = gr.Number(0, precision=0, label="Seed (measurement noise and samples)", elem_id="seed")
        with gr.Tabs():
            with gr.Tab("Test digit", elem_id="tab-test") as tab_test:
                index = gr.Slider(0, TEST_DIGITS - 1, value=0, step=1, label="Held-out test digit", elem_id="index")
            with gr.Tab("Draw", elem_id="tab-draw") as tab_draw:
                drawing = gr.Sketchpad(image_mode="L", canvas_size=(224, 224), label="Draw a digit",
                                       brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=16),
                                       layers=False, elem_id="drawing")
            with gr.Tab("Upload", elem_id="tab-upload") as tab_upload:
                upload = gr.File(label=f"An image: a clean digit or a measurement (at most "
                                       f"{MAX_UPLOAD_BYTES // 2**20} MB)", type="filepath", elem_id="upload")
                as_measurement = gr.Checkbox(False, label="The upload is already a measurement",
                                             elem_id="as-measurement")
        for tab, name in ((tab_test, "test digit"), (tab_draw, "drawing"), (tab_upload, "upload")):
            tab.select(lambda n=name: n, None, source)
        with gr.Row():
            run_davi = gr.Button("Restore (DAVI)", variant="primary", elem_id="restore")
            run_red = gr.Button(f"Run RED-Diff-{RED_DIFF_STEPS}", elem_id="red-diff")
        status = gr.Markdown("", elem_id="status")
        with gr.Row():
            info = gr.Markdown("", elem_id="timing")
            red_info = gr.Markdown("", elem_id="red-diff-timing")
        with gr.Row(equal_height=True):
            images = {name: gr.Image(label=label, elem_id=elem_id, interactive=False, height=IMAGE_PX)
                      for name, label, elem_id in (
                          ("y", "Measurement y", "measurement"), ("lift", "lift(y)", "lift"),
                          ("mean", "Mean", "mean"), ("std", "Std", "std"),
                          ("truth", "Clean digit", "truth"), ("red", f"RED-Diff-{RED_DIFF_STEPS}", "red-diff-out"))}
        gallery = gr.Gallery(label="Samples I_phi(lift(y) + h z)", columns=8, rows=1, height=IMAGE_PX + 10, elem_id="gallery")
        inputs = [task, source, index, drawing, upload, as_measurement, seed]
        run_davi.click(on_page(restore, 8), [*inputs, samples],
                       [images["y"], images["lift"], gallery, images["mean"], images["std"], images["truth"],
                        info, status])
        run_red.click(on_page(red_diff, 3), inputs, [images["red"], red_info, status])
        upload.upload(on_page(check_upload, 1), [task, upload, as_measurement], [status])
    return page


def check_upload(task, upload, as_measurement):
    """Tell the visitor at once whether an upload can be restored."""
    restorer = load_task(task)
    x, _ = image_from_upload(upload, restorer.card, restorer.operator, as_measurement)
    what = "a clean digit (it will be degraded)" if x is not None else "a measurement"
    return f"{Path(upload).name}: read as {what}. Press Restore."


def add_arguments(p) -> None:
    """The ``app`` subcommand's flags."""
    p.add_argument("--port", type=int, default=int(os.environ.get("DAVI_APP_PORT", DEFAULT_PORT)),
                   help=f"port on {HOST} (default: $DAVI_APP_PORT or {DEFAULT_PORT})")


def run(args) -> int:
    """Serve the page until Ctrl+C; exit status 2 with one line when Gradio is not installed."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("error: gradio is not installed: pip install 'davi[app]'", file=sys.stderr)
        return 2
    page = build_page()
    print(f"DAVI app on http://{HOST}:{args.port} (Ctrl+C stops it)", flush=True)
    page.queue(default_concurrency_limit=1).launch(server_name=HOST, server_port=args.port, share=False,
                                                   show_error=False, max_file_size=10 * MAX_UPLOAD_BYTES,
                                                   quiet=True, ssr_mode=False)
    return 0
