"""The app's handlers (davi/cli/app.py, behind `davi app` and app.py) without a browser: every input
source, and bad uploads become one message."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the optional extra davi[app] is not installed")

from davi.cli import app  # noqa: E402


def restore(source, **kw):
    args = {"task": "sr4", "source": source, "index": 0, "drawing": None, "upload": None,
            "as_measurement": False, "seed": 0, "samples": 3, **kw}
    return app.on_page(app.restore, 8)(*args.values())


def test_test_digit_restores_with_samples_timing_and_consistency():
    y, lifted, gallery, mean, std, truth, info, status = restore("test digit", index=5)
    assert status == ""
    assert y.size == mean.size == (app.DISPLAY_PX, app.DISPLAY_PX)
    assert len(gallery) == 3 and truth is not None
    assert "3 samples in" in info and "ms per image" in info and "Consistency" in info
    # the mean of posterior samples is closer to the digit than the lifted measurement
    psnr_mean, psnr_lift = map(float, re.search(r"clean digit: ([\d.]+) dB \(lift\(y\): ([\d.]+) dB", info).groups())
    assert psnr_mean > psnr_lift + 2


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


def test_red_diff_runs_on_the_same_measurement_with_its_time():
    image, line, status = app.on_page(app.red_diff, 3)("box", "test digit", 2, None, None, False, 0)
    assert status == "" and image.size == (app.DISPLAY_PX, app.DISPLAY_PX)
    assert "RED-Diff-100" in line and "s per image" in line and "tuned in" in line


def test_page_listens_on_loopback_only():
    assert app.HOST == "127.0.0.1"
    labels = dict((v, k) for k, v in app.task_choices())
    assert list(labels)[:3] == ["sr4", "deblur", "box"] and "super-resolution" in labels["sr4"]
