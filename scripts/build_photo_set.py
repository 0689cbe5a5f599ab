"""Build the bundled photo set (issue 29, part 1): real photographs from installable packages.

Collects colour photographs (and three grey CC0 textures) that ship inside packages installable
by name, downscales each so its shorter side is at most 512 px (aspect kept, Lanczos), stores
them as JPEG (quality 95, 4:4:4 chroma, no metadata) and writes ``manifest.json`` (one entry per
photo: split, source package and version, original file, licence, credit, sizes, digests) and a
``README.md`` card. Output: ``davi/assets/photos/`` (``--out`` to change).

Sources (all must be installed; the set is built whole or not at all):

* PyPI (``pip install -e .[photos]``): scikit-image (bundled ``skimage/data`` files),
  scikit-learn (``sklearn.datasets.load_sample_images``' ``china.jpg`` / ``flower.jpg``),
  matplotlib (``sample_data/grace_hopper.jpg``).
* Debian (``apt-get install opencv-doc plasma-workspace-wallpapers mate-backgrounds``):
  OpenCV's sample photos, the KDE Plasma wallpapers that are photographs, MATE's nature photos.
  Their licences are in ``/usr/share/doc/<package>/copyright`` (and, for Plasma, each
  wallpaper's ``metadata.json``).

Split: by photo, never by patch, from the fixed list ``TEST`` below (17 photos chosen for variety
across sources and content, each at least 256x256 once stored, no person, no stereo/flow pair,
clear licence); every other photo is train. Only one frame of each OpenCV stereo / flow /
homography pair is taken; scikit-image's stereo motorcycle pair is kept whole, in train.

The build is deterministic (fixed list, fixed resampling and encoder settings; the manifest has
no timestamps) and atomic: it writes a temporary folder next to ``--out`` and renames it into
place, so an interrupted run leaves the previous set untouched.

    python scripts/build_photo_set.py            # -> davi/assets/photos
    python scripts/build_photo_set.py --out /tmp/photos
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "davi" / "assets" / "photos"
MAX_SHORT_SIDE = 512
MIN_TEST_SIDE = 256
JPEG_QUALITY = 95
PIP_EXTRA = "pip install -e .[photos]"
APT_PACKAGES = ("opencv-doc", "plasma-workspace-wallpapers", "mate-backgrounds")
BUILD_COMMAND = "python scripts/build_photo_set.py"

# Held-out test photos (stored names without extension). Everything else is train.
TEST = (
    "skimage_chelsea", "skimage_coffee", "skimage_rocket",
    "sklearn_flower",
    "mate_dune", "mate_ladybird", "mate_storm", "mate_garden", "mate_raindrops",
    "plasma_eveningglow", "plasma_fallenleaf", "plasma_path", "plasma_colorfulcups",
    "opencv_fruits", "opencv_building", "opencv_butterfly", "opencv_squirrel",
)

# ---------------------------------------------------------------------------------------------
# Sources. Each entry: stored name, file (relative to the package's data folder), description,
# licence, credit, and an optional note / group.

SKIMAGE = [
    # name, file, description, licence, credit
    ("astronaut", "astronaut.png", "portrait of astronaut Eileen Collins (skimage.data.astronaut)",
     "Public domain (NASA)", "NASA (NASA Great Images database)"),
    ("chelsea", "chelsea.png", "Chelsea the cat (skimage.data.chelsea)",
     "CC0-1.0", "Stefan van der Walt"),
    ("coffee", "coffee.png", "coffee cup (skimage.data.coffee)",
     "CC0-1.0", "Rachel Michetti, courtesy of Pikolo Espresso Bar"),
    ("rocket", "rocket.jpg", "DSCOVR launch on Falcon 9 (skimage.data.rocket)",
     "Public domain (SpaceX release)", "SpaceX"),
    ("motorcycle_left", "motorcycle_left.png", "stereo pair, left (skimage.data.stereo_motorcycle)",
     "Redistributed by scikit-image (package BSD-3-Clause); Middlebury 2014 stereo data set, no separate licence stated",
     "Nesic, Westling, Wang, Kitajima, Krathwohl, Scharstein (Middlebury College)"),
    ("motorcycle_right", "motorcycle_right.png", "stereo pair, right (skimage.data.stereo_motorcycle)",
     "Redistributed by scikit-image (package BSD-3-Clause); Middlebury 2014 stereo data set, no separate licence stated",
     "Nesic, Westling, Wang, Kitajima, Krathwohl, Scharstein (Middlebury College)"),
    ("hubble_deep_field", "hubble_deep_field.jpg", "Hubble eXtreme Deep Field (skimage.data.hubble_deep_field)",
     "Public domain (NASA)", "NASA / ESA (HubbleSite)"),
    ("brick", "brick.png", "brick wall texture, grey (skimage.data.brick), stored as RGB",
     "CC0-1.0", "CC0Textures (Bricks25)"),
    ("grass", "grass.png", "grass texture, grey (skimage.data.grass), stored as RGB",
     "CC0-1.0", "linolafett (DeviantArt 'Grass 01')"),
    ("gravel", "gravel.png", "gravel texture, grey (skimage.data.gravel), stored as RGB",
     "CC0-1.0", "CC0Textures (Gravel04)"),
]
SKIMAGE_GROUPS = {"motorcycle_left": "skimage_motorcycle", "motorcycle_right": "skimage_motorcycle"}

SKLEARN = [
    ("china", "china.jpg", "Summer Palace, Beijing (sklearn.datasets.load_sample_images)",
     "CC-BY-2.0", "danielbuechele (Flickr), retrieved by Robert Layton"),
    ("flower", "flower.jpg", "flower (sklearn.datasets.load_sample_images)",
     "CC-BY-2.0", "vultilion (Flickr), retrieved by Robert Layton"),
]

MATPLOTLIB = [
    ("grace_hopper", "grace_hopper.jpg", "portrait of Rear Admiral Grace Hopper (matplotlib sample_data)",
     "Public domain (official US Navy photograph; matplotlib ships it without a licence note)", "US Navy"),
]

MATE_DIR = Path("/usr/share/backgrounds/mate/nature")
MATE_LICENCE = "GPL-2.0-or-later"
MATE = [  # file stem, credit (from /usr/share/doc/mate-backgrounds/copyright)
    ("Aqua", "2008 Charles Barbin"),
    ("Blinds", "2008 Lennart Poettering, Andrea Cimitan"),
    ("Dune", "2007 Marco Cogoni, 2008 Hylke Bons"),
    ("FreshFlower", "2005 Jens Ansorg"),
    ("Garden", "2008 Charles Barbin"),
    ("GreenMeadow", "2005 Timothy Schellhase, 2008 Lapo Calamandrei"),
    ("LadyBird", "2008 Charles Barbin"),
    ("RainDrops", "2008 'blackcombwhistler07'"),
    ("Storm", "2008 Sergey Nazarov"),
    ("TwoWings", "2008 Charles Barbin, Hylke Bons"),
    ("Wood", "2008 Jean-Francois Fortin Tam"),
    ("YellowFlower", "2008 Charles Barbin"),
]

PLASMA_DIR = Path("/usr/share/wallpapers")
# The 11 Plasma wallpapers that are photographs (the other 19 are drawn or rendered).
PLASMA = ["BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
          "Grey", "Kite", "OneStandsOut", "Path", "summer_1am"]

OPENCV_DIR = Path("/usr/share/doc/opencv-doc/examples")
OPENCV_LICENCE = "Apache-2.0 AND BSD-3-Clause (Debian copyright, 'Files: *' of OpenCV)"
OPENCV = [  # stored name, file, description, note on the original's origin (where known)
    ("aero1", "data/aero1.jpg", "aerial view", ""),
    ("aloe", "data/aloeL.jpg", "aloe plant (left view only)", "Middlebury stereo 2006 'Aloe'"),
    ("apple", "data/apple.jpg", "apple", ""),
    ("baboon", "data/baboon.jpg", "mandrill", "the classic USC-SIPI 'Mandrill' test image"),
    ("board", "data/board.jpg", "circuit board", ""),
    ("building", "data/building.jpg", "building", ""),
    ("butterfly", "data/butterfly.jpg", "butterfly", ""),
    ("chicky", "data/chicky_512.png", "dog", ""),
    ("notebook", "data/ela_original.jpg", "notebook (the unmodified image only)", ""),
    ("fruits", "data/fruits.jpg", "fruits", ""),
    ("graffiti", "data/graf1.png", "graffiti wall (first view only)", "Oxford VGG affine-covariant features data set 'graf'"),
    ("home", "data/home.jpg", "building and sky", ""),
    ("leuven", "data/leuvenA.jpg", "street in Leuven (first view only)", "Oxford VGG affine-covariant features data set 'leuven'"),
    ("orange", "data/orange.jpg", "orange", ""),
    ("rubberwhale", "data/rubberwhale1.png", "toys (first frame only)", "Middlebury optical flow 'RubberWhale'"),
    ("squirrel", "data/squirrel_cls.jpg", "squirrel", ""),
    ("robin", "hfs/data/000.jpg", "robin on a pipe", ""),
    ("lake", "hfs/data/001.jpg", "lake", ""),
    ("tree", "hfs/data/002.jpg", "tree in a meadow", ""),
    ("plant", "alphamat/input_images/plant.jpg", "potted plant", "alpha-matting sample"),
    ("scenetext01", "text/scenetext01.jpg", "street sign", "scene-text sample"),
    ("scenetext03", "text/scenetext03.jpg", "arcade with a sign", "scene-text sample"),
    ("scenetext04", "text/scenetext04.jpg", "generator and palms", "scene-text sample"),
    ("scenetext06", "text/scenetext06.jpg", "shop front", "scene-text sample"),
]


class MissingSource(Exception):
    pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pip_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError as e:
        raise MissingSource(f"the Python package {dist} is missing: {PIP_EXTRA}") from e


def package_dir(module: str, dist: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingSource(f"the Python package {dist} is missing: {PIP_EXTRA}")
    return Path(next(iter(spec.submodule_search_locations)))


def deb_version(pkg: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}|${Version}", pkg],
                             capture_output=True, text=True, check=False)
    except FileNotFoundError:
        out = None
    if out is None or out.returncode != 0 or "installed" not in out.stdout.split("|")[0]:
        raise MissingSource(f"the Debian package {pkg} is missing: sudo apt-get install {' '.join(APT_PACKAGES)}")
    return out.stdout.split("|", 1)[1]


def _pypi_items(prefix: str, module: str, dist: str, sub: str, table) -> list[dict]:
    """Source records of the photos ``table`` lists in the installed package ``dist`` (folder ``sub``)."""
    folder, v = package_dir(module, dist) / sub, pip_version(dist)
    items = []
    for name, fname, desc, lic, credit in table:
        item = {"name": f"{prefix}_{name}", "path": folder / fname, "original": f"{module}/{sub}/{fname}",
                "package": f"{dist} {v} (PyPI)", "description": desc, "licence": lic, "credit": credit}
        if prefix == "skimage":
            item["group"] = SKIMAGE_GROUPS.get(name)  # stereo pairs stay on one side of the split
        items.append(item)
    return items


def collect() -> list[dict]:
    """Every photo's source record (no pixels yet), in a fixed order."""
    items: list[dict] = []

    for prefix, module, dist, sub, table in (("skimage", "skimage", "scikit-image", "data", SKIMAGE),
                                             ("sklearn", "sklearn", "scikit-learn", "datasets/images", SKLEARN),
                                             ("matplotlib", "matplotlib", "matplotlib", "mpl-data/sample_data",
                                              MATPLOTLIB)):
        items += _pypi_items(prefix, module, dist, sub, table)

    v = deb_version("mate-backgrounds")
    for stem, credit in MATE:
        p = MATE_DIR / f"{stem}.jpg"
        items.append({"name": f"mate_{stem.lower()}", "path": p, "original": str(p),
                      "package": f"mate-backgrounds {v} (Debian)", "description": f"MATE nature background '{stem}'",
                      "licence": MATE_LICENCE, "credit": credit,
                      "licence_source": "/usr/share/doc/mate-backgrounds/copyright"})

    v = deb_version("plasma-workspace-wallpapers")
    for wp in PLASMA:
        d = PLASMA_DIR / wp
        meta = json.loads((d / "metadata.json").read_text(encoding="utf-8"))["KPlugin"]
        author = meta.get("Authors", [{}])[0]
        credit = author.get("Name", "")
        if author.get("Email"):
            credit += f" <{author['Email']}>"
        imgs = sorted((d / "contents" / "images").glob("*.jpg"),
                      key=lambda p: (-Image.open(p).size[0] * Image.open(p).size[1], p.name))
        p = imgs[0]  # the largest rendition
        lic = meta.get("License", "")
        lic = {"LGPLv3": "LGPL-3.0"}.get(lic, lic)
        items.append({"name": f"plasma_{wp.lower()}", "path": p, "original": str(p),
                      "package": f"plasma-workspace-wallpapers {v} (Debian)",
                      "description": f"KDE Plasma wallpaper '{meta.get('Name', wp)}'",
                      "licence": f"{lic} (upstream metadata.json; Debian copyright file: GPL-2.0-or-later)",
                      "credit": credit, "licence_source": str(d / "metadata.json")})

    v = deb_version("opencv-doc")
    for name, rel, desc, note in OPENCV:
        p = OPENCV_DIR / rel
        items.append({"name": f"opencv_{name}", "path": p, "original": str(p), "package": f"opencv-doc {v} (Debian)",
                      "description": f"OpenCV sample: {desc}", "licence": OPENCV_LICENCE,
                      "credit": "OpenCV sample data (photographer not named in the package)"
                      + (f"; origin: {note}" if note else ""),
                      "licence_source": "/usr/share/doc/opencv-doc/copyright"})

    for it in items:
        if not it["path"].is_file():
            raise MissingSource(f"{it['path']} is missing (reinstall its package)")
    names = [it["name"] for it in items]
    assert len(set(names)) == len(names), "duplicate stored names"
    unknown = set(TEST) - set(names)
    assert not unknown, f"TEST names not in the sources: {sorted(unknown)}"
    return items


def process(it: dict) -> tuple[bytes, dict]:
    raw = it["path"].read_bytes()
    im = Image.open(io.BytesIO(raw))
    im = ImageOps.exif_transpose(im)
    orig_size = list(im.size)
    orig_mode = im.mode
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    im = im.convert("RGB")
    w, h = im.size
    short = min(w, h)
    if short > MAX_SHORT_SIDE:
        s = MAX_SHORT_SIDE / short
        size = (MAX_SHORT_SIDE, round(h * s)) if w == short else (round(w * s), MAX_SHORT_SIDE)
        im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=None)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=True)
    data = buf.getvalue()
    arr = np.asarray(im)
    grey = bool(np.all(arr[..., 0] == arr[..., 1]) and np.all(arr[..., 1] == arr[..., 2]))
    info = {"original_size": orig_size, "original_mode": orig_mode, "original_sha256": sha256(raw),
            "stored_size": list(im.size), "grey": grey}
    return data, info


def build(out: Path) -> dict:
    items = collect()
    out = out.resolve()
    if out.exists() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise SystemExit(f"error: {out} exists, is not empty and holds no manifest.json; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        entries = []
        for it in items:
            data, info = process(it)
            fname = f"{it['name']}.jpg"
            (tmp / fname).write_bytes(data)
            split = "test" if it["name"] in TEST else "train"
            if split == "test":
                w, h = info["stored_size"]
                assert min(w, h) >= MIN_TEST_SIDE, f"test photo {fname} is {w}x{h}"
            e = {"file": fname, "split": split, "source_package": it["package"], "original": it["original"],
                 "description": it["description"], "licence": it["licence"], "credit": it["credit"]}
            if it.get("licence_source"):
                e["licence_source"] = it["licence_source"]
            if it.get("group"):
                e["group"] = it["group"]
            e.update(info)
            e["stored_bytes"] = len(data)
            e["sha256"] = sha256(data)
            entries.append(e)
        n_train = sum(e["split"] == "train" for e in entries)
        n_test = sum(e["split"] == "test" for e in entries)
        manifest = {
            "description": "Real photographs from packages installable by name, for patch priors and "
                           "whole-photo restoration (issue 29). Split by photo, never by patch.",
            "build_command": BUILD_COMMAND,
            "apt_packages": list(APT_PACKAGES),
            "pip_extra": PIP_EXTRA,
            "processing": f"EXIF-transposed, alpha composited on white, converted to RGB; shorter side "
                          f"downscaled to at most {MAX_SHORT_SIDE} px (aspect kept, Pillow Lanczos); "
                          f"JPEG quality {JPEG_QUALITY}, 4:4:4 chroma, no metadata",
            "split_rule": f"fixed list TEST in scripts/build_photo_set.py ({len(TEST)} photos: varied sources and "
                          "content, each at least 256x256, no person, no stereo/flow pair, clear licence); "
                          "every other photo is train",
            "pillow": Image.__version__,
            "counts": {"train": n_train, "test": n_test, "total": len(entries)},
            "total_bytes": sum(e["stored_bytes"] for e in entries),
            "photos": entries,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
        (tmp / "README.md").write_text(card(manifest), encoding="utf-8")
        for p in tmp.iterdir():
            os.chmod(p, 0o644)
        os.chmod(tmp, 0o755)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            old.rmdir()
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old)
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def card(m: dict) -> str:
    rows = []
    for e in m["photos"]:
        w, h = e["stored_size"]
        rows.append(f"| `{e['file']}` | {e['split']} | {w}x{h} | {e['source_package']} | {e['licence']} | {e['credit']} |")
    by_src: dict[str, list[int]] = {}
    for e in m["photos"]:
        key = e["source_package"].split(" ")[0]
        c = by_src.setdefault(key, [0, 0])
        c[0 if e["split"] == "train" else 1] += 1
    src_rows = "\n".join(f"| {k} | {v[0]} | {v[1]} |" for k, v in by_src.items())
    test = ", ".join(f"`{e['file']}`" for e in m["photos"] if e["split"] == "test")
    c = m["counts"]
    return f"""# Photo set

{c['total']} real photographs ({c['train']} train, {c['test']} held-out test), {m['total_bytes'] / 1e6:.1f} MB,
from packages installable by name. Built by

```bash
pip install -e .[photos]   # scikit-image, scikit-learn, matplotlib
sudo apt-get install {' '.join(m['apt_packages'])}
{m['build_command']}   # --out DIR to write elsewhere
```

The build is deterministic and writes atomically; `manifest.json` lists, per photo, the split,
the source package and version, the original file (and its sha256), the licence (and the file it
was read from), the credit, the original and stored sizes, whether it is grey, and the stored
file's sha256.

**Processing.** {m['processing']}.

**Split (by photo, never by patch).** {m['split_rule'][0].upper() + m['split_rule'][1:]}. Test: {test}.
The two portraits (astronaut, Grace Hopper) are train only. Of each OpenCV stereo, optical-flow
or homography pair only one frame is taken; scikit-image's stereo motorcycle pair (both frames)
is train. Three grey CC0 textures (brick, grass, gravel) are stored as RGB (R = G = B) in train;
`grey` in the manifest marks every photo with R = G = B ({', '.join(e['file'] for e in m['photos'] if e['grey'])}).

| source | train | test |
|---|---|---|
{src_rows}

**Licences.** scikit-image photos: CC0 / public domain (NASA, SpaceX), the Middlebury motorcycle
pair as redistributed by scikit-image; scikit-learn: CC-BY 2.0 (credit the Flickr authors);
matplotlib's Grace Hopper: public domain US Navy photograph; MATE nature photos: GPL-2.0-or-later
(authors from `/usr/share/doc/mate-backgrounds/copyright`); KDE Plasma photographs: LGPL-3.0 per
each wallpaper's `metadata.json` (Debian's copyright file summarises the package as GPL-2.0-or-later);
OpenCV samples: Apache-2.0 AND BSD-3-Clause per Debian's copyright file for OpenCV (`Files: *`);
the package does not name their photographers, and some are older test images (e.g. the USC-SIPI
mandrill) whose original terms are not stated. These files are downscaled re-encodings;
redistribute them under their own licences, not the project's MIT licence.

**Left out.** Grey photos other than the three textures (camera, coins, moon, OpenCV's calibration
and grey scenes), non-photographs (drawn/rendered wallpapers, logos, charts, the rendered `smarties.png`, `starry_night`),
images of identifiable people other than the two public-domain portraits (e.g. OpenCV's
`messi5.jpg`), degraded inputs (`licenseplate_motion`, `text_defocus`), the second frame of
pairs, benchmark crops (`dnn_superres/butterfly.png`, Set5), microscopy / fundus images
(`ihc`, `retina`), scikit-image's `lfw_subset` (25x25 face crops).

| file | split | stored | source | licence | credit |
|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Build the bundled photo set (real photographs from installable packages) with "
                    "its manifest.json and README.md card. Needs the 'photos' extra "
                    f"({PIP_EXTRA}) and the Debian packages {', '.join(APT_PACKAGES)}.")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help=f"output folder, replaced atomically (default: {DEFAULT_OUT.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    try:
        m = build(args.out)
    except MissingSource as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = m["counts"]
    print(f"wrote {c['total']} photos ({c['train']} train, {c['test']} test), "
          f"{m['total_bytes'] / 1e6:.1f} MB, to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
