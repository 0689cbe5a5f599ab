"""The config tree: every shipped YAML loads, overrides are typed, mistakes are one clear ConfigError."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from davi.config import Config, ConfigError, TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_the_configs_folder_is_not_empty():
    assert len(CONFIGS) >= 2, CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.job in ("prior", "davi", "unpaired")
    assert cfg != Config()  # the file's values were applied, not just the defaults


def test_prior_config_values_come_from_the_file():
    cfg = load_config(ROOT / "configs" / "prior_mnist.yaml")
    assert cfg.job == "prior"
    assert cfg.train.lr == 5e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.max_steps == 4000
    assert cfg.train.output_dir == "runs/prior_mnist"


def test_overrides_apply_with_the_right_types():
    cfg = load_config(ROOT / "configs" / "prior_mnist.yaml",
                      ["train.lr=3e-4", "prior.block_out_channels=[8,16]", "train.mixed_precision=bf16",
                       "train.max_steps=7", "log.progress=false"])
    assert cfg.train.lr == pytest.approx(3e-4) and type(cfg.train.lr) is float
    assert cfg.prior.block_out_channels == [8, 16] and all(type(c) is int for c in cfg.prior.block_out_channels)
    assert cfg.train.mixed_precision == "bf16"
    assert cfg.train.max_steps == 7 and type(cfg.train.max_steps) is int
    assert cfg.log.progress is False
    # An integer given for a float field becomes a float.
    assert type(load_config(None, ["train.lr=1"]).train.lr) is float


def test_later_overrides_win():
    assert load_config(None, ["train.seed=1", "train.seed=5"]).train.seed == 5


@pytest.mark.parametrize("override, key, expected", [
    # YAML 1.1 would read these as a boolean, a mapping, a base-60 integer or a float.
    ("train.mixed_precision=no", "train.mixed_precision", "no"),
    ("data.train_range=1000:", "data.train_range", "1000:"),
    ("data.test_range=1:30", "data.test_range", "1:30"),
    ("data.source=1e3", "data.source", "1e3"),
    ("train.output_dir=runs/1e5", "train.output_dir", "runs/1e5"),
])
def test_string_overrides_keep_their_text(override, key, expected):
    cfg = load_config(None, [override])
    section, name = key.split(".")
    assert getattr(getattr(cfg, section), name) == expected


def test_no_in_a_yaml_file_is_the_string_no(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  mixed_precision: no\n  lr: 1e-3\ndata:\n  test_range: 1:30\n")
    cfg = load_config(f)
    assert cfg.train.mixed_precision == "no"
    assert cfg.train.lr == pytest.approx(1e-3) and type(cfg.train.lr) is float
    assert cfg.data.test_range == "1:30"


def _valid_train_keys() -> list[str]:
    return [f"train.{k}" for k in TrainConfig.__dataclass_fields__]


@pytest.mark.parametrize("override, key, valid", [
    ("trian.lr=1", "trian", ["job", "data", "train", "prior"]),
    ("train.lrr=1", "train.lrr", ["train.lr", "train.max_steps", "train.output_dir"]),
])
def test_unknown_key_in_an_override(override, key, valid):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert f"'{key}'" in msg and "valid" in msg
    for v in valid:
        assert v in msg, (v, msg)
    assert "\n" not in msg


@pytest.mark.parametrize("text, key, valid", [
    ("job: prior\ntrainer:\n  lr: 1\n", "trainer", ["train", "data", "log"]),
    ("job: prior\ntrain:\n  max_stpes: 3\n", "train.max_stpes", ["train.max_steps", "train.batch_size"]),
])
def test_unknown_key_in_a_file(tmp_path, text, key, valid):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert f"'{key}'" in msg and str(f) in msg
    for v in valid:
        assert v in msg, (v, msg)


def test_unknown_key_lists_every_valid_key():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.nope=1"])
    for k in _valid_train_keys():
        assert k in str(e.value)


@pytest.mark.parametrize("override, key", [
    ("train.max_steps=abc", "train.max_steps"),
    ("train.max_steps=1.5", "train.max_steps"),
    ("mapper.tanh=3", "mapper.tanh"),
    ("train.lr=fast", "train.lr"),
    ("prior.block_out_channels=8", "prior.block_out_channels"),
    ("prior.block_out_channels=[8,x]", "prior.block_out_channels"),
    ("train=3", "train"),
    ("operator.name=blurr", "operator.name"),
    ("train.mixed_precision=fp8", "train.mixed_precision"),
    ("job=pretrain", "job"),
    ("train.checkpoint_every=0", "train.checkpoint_every"),  # the trainer divides by these
    ("log.every=0", "log.every"),
    ("train.batch_size=-2", "train.batch_size"),
    ("mapper.noise_channels=-1", "mapper.noise_channels"),
    ("davi.score_warmup=-5", "davi.score_warmup"),
])
def test_wrong_type_or_choice_names_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value).startswith(key), str(e.value)


def test_bad_choice_lists_the_choices():
    with pytest.raises(ConfigError, match=r"operator\.name: 'blurr' is not one of deblur, sr, box_inpaint"):
        load_config(None, ["operator.name=blurr"])


def test_wrong_type_in_a_file_names_file_and_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("mapper:\n  tanh: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: mapper\.tanh: expected true/false"):
        load_config(f)


def test_missing_file_and_bad_yaml_and_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    f = tmp_path / "broken.yaml"
    f.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["train.lr"])


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_to_yaml_round_trips(tmp_path, path):
    cfg = load_config(path, ["train.lr=3e-4", "train.mixed_precision=no", "data.test_range=0:10",
                             "prior.block_out_channels=[8,16]", "mapper.tanh=true", "train.output_dir=runs/1e5"])
    f = tmp_path / "round.yaml"
    f.write_text(cfg.to_yaml())
    back = load_config(f)
    assert back == cfg
    assert back != Config()  # the comparison can fail


@pytest.mark.slow  # launches a Python process
def test_train_py_bad_override_is_one_error_line():
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "prior_mnist.yaml"),
                           "train.max_steps=abc"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and "train.max_steps" in lines[0]


@pytest.mark.slow  # launches a Python process
def test_train_py_unknown_key_is_one_error_line():
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "prior_mnist.yaml"),
                           "train.lrr=1"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown key 'train.lrr'"), proc.stderr
