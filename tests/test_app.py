"""The app's handlers (davi/cli/app.py, behind `davi app` and app.py) without a browser: every input
source, and bad uploads become one message."""

from __future__ import annotations

import importlib.util
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from davi.cli import app

# the handlers need Gradio (on_page); the command's own checks (port, missing Gradio) do not
needs_gradio = pytest.mark.skipif(importlib.util.find_spec("gradio") is None,
                                  reason="the optional extra davi[app] (gradio) is not installed")


def restore(source, **kw):
    args = {"task": "sr4", "source": source, "index": 0, "drawing": None, "upload": None,
            "as_measurement": False, "seed": 0, "samples": 3, **kw}
    return app.on_page(app.restore, 8)(*args.values())


def consistency_of(info: str) -> tuple[float, str, float]:
    """(r, the verdict's words, the card's threshold) from the page's consistency line."""
    r, verdict, threshold = re.search(r"\*\*Consistency\*\* r = ([\d.]+), (.*) the card's threshold ([\d.]+)", info).groups()
    return float(r), verdict, float(threshold)


@needs_gradio
def test_test_digit_restores_with_samples_timing_and_consistency():
    from davi.eval.metrics import psnr

    y, lifted, gallery, mean, std, truth, info, status = restore("test digit", index=5)
    assert status == ""
    assert y.size == mean.size == (app.DISPLAY_PX, app.DISPLAY_PX)
    assert len(gallery) == 3 and truth is not None
    assert "3 samples in" in info and "ms per image" in info
    # the PSNRs shown are the restoration's mean's and lift(y)'s, against the clean digit
    psnr_mean, psnr_lift = map(float, re.search(r"clean digit: ([\d.]+) dB \(lift\(y\): ([\d.]+) dB", info).groups())
    x, meas, restorer = app.measurement("sr4", "test digit", 5, None, None, False, 0)
    out = restorer(meas, samples=3, seed=0, progress=False)
    assert psnr_mean == pytest.approx(float(psnr(out.mean, x)[0]), abs=0.006)
    assert psnr_lift == pytest.approx(float(psnr(restorer.operator.lift(meas), x)[0]), abs=0.006)
    assert psnr_mean > psnr_lift + 2  # the mean of posterior samples is closer to the digit than lift(y)
    # a held-out digit's answer is consistent: r below the card's threshold, and the page says "within"
    r, verdict, threshold = consistency_of(info)
    assert r == pytest.approx(float(out.consistency[0]), abs=0.006) and r < threshold
    assert verdict == "within"


@needs_gradio
def test_an_inconsistent_answer_is_flagged_above_the_threshold(tmp_path):
    """A measurement no digit produces (a full-range checkerboard): r far above the threshold, and the page
    says so (the verdict follows r > threshold, not its inverse)."""
    board = tmp_path / "board.png"
    Image.fromarray(((np.indices((8, 8)).sum(0) % 2) * 255).astype(np.uint8)).save(board)
    *_, truth, info, status = restore("upload", upload=str(board), as_measurement=True)
    assert status == "" and truth is None and "PSNR" not in info  # no clean digit, no PSNR
    r, verdict, threshold = consistency_of(info)
    assert r > threshold and verdict.startswith("**above**") and "try RED-Diff" in verdict


def test_consistency_line_states_the_verdict_of_r_against_the_threshold():
    from types import SimpleNamespace

    line = lambda r, flagged, threshold: app.consistency_line(  # noqa: E731
        SimpleNamespace(consistency=torch.tensor([r]), flagged=None if flagged is None else torch.tensor([flagged])),
        threshold)
    assert line(0.9, False, 2.0) == "**Consistency** r = 0.90, within the card's threshold 2.00"
    assert line(7.5, True, 2.0).startswith("**Consistency** r = 7.50, **above** — do not trust")
    assert "no threshold in this card" in line(1.1, None, None)
    assert app.consistency_line(SimpleNamespace(consistency=None, flagged=None), 2.0) == ""  # sigma_y = 0


@needs_gradio
def test_drawing_becomes_a_centred_light_on_dark_digit():
    canvas = np.full((224, 224), 255, np.uint8)
    canvas[30:200, 150:170] = 0  # a dark vertical stroke near the right edge
    x = app.digit_from_drawing({"composite": canvas}, 32)
    assert x.shape == (1, 1, 32, 32) and float(x.min()) == -1.0 and float(x.max()) > 0.9
    cols = np.nonzero((x[0, 0] > 0).numpy().any(0))[0]
    assert abs((cols.min() + cols.max()) / 2 - 15.5) <= 1  # moved to the centre
    rows = np.nonzero((x[0, 0] > 0).numpy().any(1))[0]
    assert rows.max() - rows.min() + 1 == 20  # fitted into the central 20 pixels, as MNIST digits are
    *_, status = restore("drawing", drawing={"composite": np.full((224, 224), 255, np.uint8)})
    assert status.startswith("⚠") and "empty" in status


@needs_gradio
def test_uploads_clean_digit_measurement_and_bad_files(tmp_path):
    clean, low, wrong, corrupt, huge = (tmp_path / n for n in ("c.png", "m.png", "w.png", "x.png", "h.png"))
    Image.new("L", (32, 32), 0).save(clean)
    Image.new("L", (8, 8), 200).save(low)
    Image.new("L", (50, 40), 0).save(wrong)
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    huge.write_bytes(b"\0" * (app.MAX_UPLOAD_BYTES + 1))
    assert "clean digit" in app.on_page(app.check_upload, 1)("sr4", str(clean), False)
    assert "measurement" in app.on_page(app.check_upload, 1)("sr4", str(low), False)
    *_, truth, info, status = restore("upload", upload=str(low))
    assert status == "" and truth is None and "DAVI" in info  # a measurement has no clean digit
    for path, fragment in ((corrupt, "not a readable image"), (wrong, "is 50x40"), (huge, "limited to 2 MB")):
        *_, status = restore("upload", upload=str(path))
        assert status.startswith("⚠") and fragment in status and "Traceback" not in status, status
    *_, status = restore("upload", upload=None)
    assert "No file uploaded" in status


@needs_gradio
def test_red_diff_runs_on_the_same_measurement_with_its_time():
    image, line, status = app.on_page(app.red_diff, 3)("box", "test digit", 2, None, None, False, 0)
    assert status == "" and image.size == (app.DISPLAY_PX, app.DISPLAY_PX)
    assert "RED-Diff-100" in line and "s per image" in line and "tuned in" in line


@needs_gradio
def test_page_listens_on_loopback_only():
    assert app.HOST == "127.0.0.1"
    labels = dict((v, k) for k, v in app.task_choices())
    assert list(labels)[:3] == ["sr4", "deblur", "box"] and "super-resolution" in labels["sr4"]


class _FakePage:
    """What run() asks of a Gradio page: queue().launch(**kw), recorded."""

    def __init__(self):
        self.launched = None

    def queue(self, **kw):
        return self

    def launch(self, **kw):
        self.launched = kw


@needs_gradio
@pytest.mark.parametrize("argv, env, port", [(["--port", "7861"], None, 7861), ([], "7999", 7999),
                                             ([], None, 7860)])
def test_the_page_serves_on_the_port_asked_for_on_loopback(monkeypatch, capsys, argv, env, port):
    from davi.cli.main import run_one

    if env is None:
        monkeypatch.delenv("DAVI_APP_PORT", raising=False)
    else:
        monkeypatch.setenv("DAVI_APP_PORT", env)
    page = _FakePage()
    monkeypatch.setattr(app, "build_page", lambda: page)
    assert run_one(app, argv, prog="app.py") == 0
    assert page.launched["server_port"] == port and page.launched["server_name"] == "127.0.0.1"
    assert page.launched["share"] is False


def test_without_gradio_the_page_exits_with_one_line_naming_the_extra(monkeypatch, capsys):
    from davi.cli.main import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    monkeypatch.setattr(app, "build_page", lambda: pytest.fail("the page was built without Gradio"))
    code = main(["app", "--port", "7861"])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "gradio" in err and "pip install 'davi[app]'" in err


def test_a_bad_port_is_a_usage_error(capsys):
    from davi.cli.main import run_one

    with pytest.raises(SystemExit) as e:
        run_one(app, ["--port", "http"], prog="app.py")
    assert e.value.code == 2 and "--port: invalid int value" in capsys.readouterr().err
