"""Hugging Face model cards (``README.md`` with YAML front matter) for mapper exports.

Everything in a card comes from the export's ``card.json`` and from measured metrics; metrics
carry the command that produced them and are absent when unknown. A card is rewritten whenever
the export changes (export, ONNX added); metrics already in the folder's README are kept, since
the folder is replaced as a whole when its weights change.

    davi card --export davi/assets/mappers/sr4 \
        --results benchmarks/results/tasks.json --row sr4 "davi (shipped, fp16)"
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from davi.io.atomic import write_text
from davi.io.card import ExportCard

README = "README.md"
LICENSE = "mit"
DEFAULT_OBJECTIVE = "paired"  # the DAVI recipe with the regression term, before objectives had names
ONNX_FILE = "mapper.onnx"
METRIC_NAMES = {"psnr": "PSNR (dB)", "ssim": "SSIM", "classifier_fd": "classifier FD (digit-classifier features, not FID)",
                "kid": "KID (digit-classifier features)"}


class ModelCardError(ValueError):
    """A model card or metrics file that cannot be read (the message names the file)."""


CardLike = ExportCard | dict[str, Any]  # a dict: a card.json being written (export_mapper), read as an ExportCard


def as_card(card: CardLike) -> ExportCard:
    """``card`` as an :class:`ExportCard` (a parsed card.json is checked by ``ExportCard.from_dict``)."""
    return ExportCard.coerce(card)


def card_family(card: ExportCard):
    """The OperatorFamily a family export's card records (``family``), else None."""
    from davi.operators.family import OperatorFamily

    params = card.extra.get("family")
    return OperatorFamily.from_params(params) if params else None


def describe_task(card: CardLike) -> str:
    """A human name for the card's operator (an ExportCard, or an operator's params dict), e.g.
    '4x super-resolution (4x4 average pooling)': the operator's own describe(); a family export's
    family. An operator the card names by import path is not imported (no code a card names runs here):
    its name is used instead."""
    from davi.operators import OperatorError, operator_from_params

    if isinstance(card, ExportCard) and (family := card_family(card)) is not None:
        return family.describe()
    op = card.operator if isinstance(card, ExportCard) else card
    try:
        return operator_from_params(op).describe()
    except (OperatorError, KeyError, TypeError, ValueError):
        return str(op.get("name", "operator"))


def objective(card: CardLike) -> str:
    """The training objective: the card's own key, else the training config's, else the original one."""
    return as_card(card).objective or DEFAULT_OBJECTIVE


def model_name(card: ExportCard) -> str:
    source = Path(str(card.trained_data.get("source", "images"))).name or "images"
    return f"davi-{card.task}-{source}"


def front_matter(card: CardLike, metrics: dict[str, Any] | None = None, onnx: bool = False) -> dict[str, Any]:
    """The YAML header: hub keys (license, library_name, tags, pipeline_tag, model-index) + a davi block."""
    card = as_card(card)
    tags = ["davi", "image-restoration", "inverse-problems", "diffusion-prior", "posterior-sampling",
            "one-step", card.task] + (["onnx"] if onnx else [])
    davi_block = {
        "task": card.task,
        "task_description": describe_task(card),
        **_operator_keys(card),
        "h": card.h,
        "resolution": card.resolution,
        "channels": card.channels,
        "prior": {"identity": card.prior.identity or None, "digest": card.prior.digest or None},
        "training": {"steps": card.steps, "objective": objective(card),
                     "data": card.trained_data.get("source"),
                     "loss_weights": {k: v for k, v in card.config.get("davi", {}).items() if k != "objective"}},
        "weights_dtype": card.shipped_dtype or "float32",
        "files": ["diffusion_pytorch_model.safetensors", "config.json", "card.json"] + (["mapper.onnx"] if onnx else []),
    }
    if card.consistency:
        davi_block["consistency"] = card.consistency
    if metrics:
        davi_block["metrics"] = metrics
    front = {"license": LICENSE, "library_name": "davi", "pipeline_tag": "image-to-image", "tags": tags}
    if metrics:
        front["model-index"] = [_model_index(card, metrics)]
    front["davi"] = davi_block
    return front


def _operator_keys(card: ExportCard) -> dict[str, Any]:
    """The davi block's operator and sigma_y: a family export's family and noise range (its card's
    ``operator`` is only the member it was exported with)."""
    family = card.extra.get("family")
    if family:
        return {"family": family, "sigma_y": family["sigma_y"], "condition": card.extra.get("condition")}
    return {"operator": card.operator, "sigma_y": card.sigma_y}


def _model_index(card: ExportCard, metrics: dict[str, Any]) -> dict[str, Any]:
    values = [{"type": k, "name": METRIC_NAMES.get(k, k), "value": v} for k, v in metrics["values"].items()]
    return {"name": model_name(card), "results": [{
        "task": {"type": "image-to-image", "name": metrics.get("member") or describe_task(card)},
        "dataset": {"name": metrics.get("data", ""), "type": metrics.get("data", ""), "split": metrics.get("split", "")},
        "metrics": values,
        "source": {"name": metrics.get("command", "")},
    }]}


def model_card(card: CardLike, metrics: dict[str, Any] | None = None, onnx: bool = False) -> str:
    """README.md text: YAML front matter + what the mapper does, how to run it, what was measured."""
    card = as_card(card)
    front = yaml.safe_dump(front_matter(card, metrics, onnx), sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + _body(card, metrics, onnx)


def _body(card: ExportCard, metrics: dict[str, Any] | None, onnx: bool) -> str:
    if card_family(card) is not None:
        return _family_body(card, metrics)
    c, r = card.channels, card.resolution
    lines = [
        f"# {model_name(card)}",
        "",
        f"A DAVI mapper (Lee et al. 2024) for **{describe_task(card)}** of {c}x{r}x{r} images, measurement noise "
        f"sigma_y = {card.sigma_y}: a one-step restorer "
        f"x_hat = I_phi(lift(y) + h z, T - 1) with h = {card.h}, trained for {card.steps} steps "
        f"(objective: {objective(card)}) against the frozen diffusion prior `{card.prior.identity or None}` "
        f"(digest `{card.prior.digest or None}`). " + _spread(card),
        "",
        "## Use",
        "",
        "```bash",
        "# with this repository installed (pip install -e .)",
        "python infer.py restore --export THIS_FOLDER --input measurements/ --samples 8 --out restored/",
    ]
    if onnx:
        lines.append("python infer.py restore --export THIS_FOLDER --input measurements/ --runtime onnx --out restored/")
    lines += ["```", "", f"Pixels are in [-1, 1] (PNG 0..255 maps linearly). Measurements are {c}x"
              f"{_measured(card).replace(', ', 'x')} images (or float `.npy` arrays, which keep the noise below "
              "8-bit quantisation).", ""]
    if onnx:
        lines += ["## ONNX", "", "`mapper.onnx` is the whole restore including the lift (opset 17, dynamic batch):",
                  "", "| name | shape | meaning |", "|---|---|---|",
                  f"| input `y` | (B, {c}, {_measured(card)}) float32 | the measurement, pixels in [-1, 1] |",
                  f"| input `z` | (B, {c}, {r}, {r}) float32 | standard normal noise, one draw per sample |",
                  f"| output `x_hat` | (B, {c}, {r}, {r}) float32 | the restoration, unclamped (clamp to [-1, 1]) |", ""]
    lines += _trust(card.consistency) + _metrics(metrics)
    lines += ["Files: `diffusion_pytorch_model.safetensors` + `config.json` (the mapper, diffusers format), "
              "`card.json` (operator, prior, training config)" + (", `mapper.onnx`" if onnx else "") + ".", ""]
    return "\n".join(lines)


def _family_body(card: ExportCard, metrics: dict[str, Any] | None) -> str:
    """The body of a family export's card: one mapper for every member, named at restore time."""
    c, r = card.channels, card.resolution
    lines = [
        f"# {model_name(card)}", "",
        f"One DAVI mapper (Lee et al. 2024) for a **{describe_task(card)}**, on {c}x{r}x{r} images: each "
        f"measurement is restored in one step, x_hat = I_phi(lift(y) + h z, T - 1 | member) with h = {card.h}, "
        f"the network conditioned on the member that measured y (`{card.extra.get('condition')}`: docs/family.md); "
        f"trained for {card.steps} steps (objective: {objective(card)}) against the frozen diffusion prior "
        f"`{card.prior.identity or None}` (digest `{card.prior.digest or None}`). " + _spread(card), "",
        "## Use", "",
        ("Name the member that measured y (its operator and noise level); one outside the family is refused "
         "with a one-line error, never extrapolated."), "",
        "```bash",
        "# with this repository installed (pip install -e .)",
        ("python infer.py restore --export THIS_FOLDER --input measurements/ --operator deblur --kernel-std 1.7 "
         "--sigma-y 0.08 --samples 8 --out restored/"),
        "```", "",
        "```python",
        "restorer = davi.Restorer.from_pretrained(THIS_FOLDER)",
        'out = restorer(y, samples=8, operator={"name": "deblur", "kernel_std": 1.7}, sigma_y=0.08)',
        "```", "",
        "Pixels are in [-1, 1] (PNG 0..255 maps linearly); a measurement has its member's shape.", ""]
    lines += _trust(card.consistency) + _metrics(metrics)
    lines += [("Files: `diffusion_pytorch_model.safetensors` + `config.json` (the mapper, diffusers format), "
               "`card.json` (the family, prior, training config)."), ""]
    return "\n".join(lines)


def _trust(consistency: dict[str, Any] | None) -> list[str]:
    """The "When to trust a restoration" section, when the card has a calibrated threshold (a family's:
    one per noise level)."""
    if not (isinstance(consistency, dict) and "threshold" in consistency):
        return []
    definition = consistency.get("definition", consistency.get("statistic", ""))
    levels = consistency.get("by_sigma")
    if isinstance(levels, dict) and levels.get("sigma_y"):
        pairs = ", ".join(f"{t:.2f} at {s:.3g}" for s, t in zip(levels["sigma_y"], levels["threshold"]))
        where = (f"Its thresholds depend on the noise level: {pairs} (quantile "
                 f"{consistency.get('threshold_quantile', '?')} of r on {levels.get('images', '?')} held-out images "
                 f"of `{consistency.get('source', '?')}` at each sigma_y, each measured by a member drawn from the "
                 f"family; linear in log sigma_y between them, constant outside)")
    else:
        where = (f"This export's threshold is **{consistency['threshold']:.3f}** (quantile "
                 f"{consistency.get('threshold_quantile', '?')} of r on {consistency.get('n', '?')} held-out "
                 f"images of `{consistency.get('source', '?')}`)")
    return ["## When to trust a restoration", "",
            (f"Per image, the consistency statistic r ({definition}) is about 1 when the restoration fits the "
             f"measurement as well as the truth does. {where}; `infer.py restore` flags images above it."), ""]


def _metrics(metrics: dict[str, Any] | None) -> list[str]:
    """The "Measured" section: the metrics and the command that measured them, or a note that there are none."""
    if not metrics:
        return ["## Measured", "", "No metrics recorded for this export yet "
                "(`python infer.py card --export FOLDER --results ... --row ...` adds them from a benchmark's results).", ""]
    member = f" measured by the member {metrics['member']}" if metrics.get("member") else ""
    lines = ["## Measured", "", f"{metrics.get('images', '?')} images of `{metrics.get('data', '?')}` "
             f"(split `{metrics.get('split', '?')}`){member}, one sample per image:", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {METRIC_NAMES.get(k, k)} | {v} |" for k, v in metrics["values"].items()]
    return lines + ["", "Command:", "", "```bash", metrics.get("command", ""), "```", ""]


def _spread(card: ExportCard) -> str:
    """What different noise draws z mean for this objective."""
    if objective(card) == "paired":
        return ("The paired objective (the paper's recipe, with the regression term) makes it a point "
                "estimator: different noise draws z give slightly different restorations, but their spread "
                "is not a posterior standard deviation.")
    return ("Different noise draws z give samples of the approximate posterior; their mean and standard "
            "deviation give a restoration and a per-pixel uncertainty map.")


def _measured(card: ExportCard) -> str:
    """The measurement's height and width, ``"h, w"``; ``"h, w"`` literally when the card's operator
    cannot be built without running code it names (an import-path operator) or is broken."""
    from davi.operators import OperatorError, operator_from_params

    c, r = card.channels, card.resolution
    try:
        _, _, h, w = operator_from_params(card.operator).measurement_shape((1, c, r, r))
    except (OperatorError, KeyError, TypeError, ValueError):
        return "h, w"
    return f"{h}, {w}"


def read_front_matter(path: str | Path) -> dict[str, Any]:
    """The YAML front matter of a model card; ModelCardError naming the file when there is none."""
    text = Path(path).read_text()
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        raise ModelCardError(f"{path}: no YAML front matter (--- ... ---)")
    try:
        front = yaml.safe_load(text[4: text.index("\n---\n", 4)])
    except yaml.YAMLError as e:
        raise ModelCardError(f"{path}: unreadable YAML front matter ({e.__class__.__name__})") from None
    if not isinstance(front, dict):
        raise ModelCardError(f"{path}: front matter is not a mapping")
    return front


def write_model_card(export_dir: str | Path, card: CardLike, metrics: dict[str, Any] | None = None) -> Path:
    """Write ``<export_dir>/README.md`` for ``card`` (its card.json, typed or as a dict); ``metrics=None`` keeps the
    metrics of the README already there (same weights: an export folder is replaced as a whole)."""
    export_dir, card = Path(export_dir), as_card(card)
    path = export_dir / README
    if metrics is None and path.is_file():
        try:
            metrics = read_front_matter(path).get("davi", {}).get("metrics")
        except ModelCardError:
            metrics = None
    if metrics and not metrics.get("data"):
        metrics = {**metrics, "data": card.trained_data.get("source", "")}
    text = model_card(card, metrics, onnx=(export_dir / ONNX_FILE).is_file())
    write_text(path, text)
    return path


def metrics_from_results(results: str | Path, task: str, method: str) -> dict[str, Any]:
    """Metrics of one row (task, method) of a benchmark's results JSON (``command``, ``head``, ``rows``,
    as benchmarks/readme_tables.publish writes them), with its command and held-out image count."""
    try:
        data = json.loads(Path(results).read_text())
        rows, command = data["rows"], data["command"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelCardError(f"{results}: not a benchmark results JSON ({e.__class__.__name__})") from None
    for row in rows:
        if row.get("task") == task and row.get("method") == method:
            values = {k: row[k] for k in METRIC_NAMES if row.get(k) is not None}
            images = _held_out_images(data.get("head", ""))
            return {"values": values, "images": images, "split": "test" if images else "",
                    "command": command, "results": str(results)}
    raise ModelCardError(f"{results}: no row with task '{task}' and method '{method}'")


def _held_out_images(text: str) -> int | None:
    m = re.search(r"(\d[\d,]*) held-out test images", text)
    return int(m.group(1).replace(",", "")) if m else None
