"""guided-diffusion -> diffusers conversion (davi.io.convert) against the reference UNet in guided_reference.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from guided_reference import from_script_args

from davi.cli.main import main as davi_main
from davi.io.convert import PRESETS, ConversionError, convert_checkpoint, convert_state_dict, unet_config_from_guided
from davi.models.prior import DiffusionPrior

# The DPS / ImageNet layout at toy size: learned sigma, scale-shift norm, resblock up/down, legacy QKV,
# attention at 16 and 8 (levels 1 and 2), 4 heads of 16 channels.
SMALL = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult=(1, 2, 2), attention_resolutions=(16, 8),
             num_head_channels=16, learn_sigma=True, use_scale_shift_norm=True, resblock_updown=True,
             use_new_attention_order=False)
# Every other switch: new QKV order, head count instead of width, additive time embedding, strided-conv /
# nearest+conv resampling, two res blocks, eps-only output.
OTHER = dict(image_size=16, num_channels=32, num_res_blocks=2, channel_mult=(1, 2), attention_resolutions=(8,),
             num_heads=2, learn_sigma=False, use_scale_shift_norm=False, resblock_updown=False,
             use_new_attention_order=True)
REFERENCE_ARGS = ("num_heads", "num_head_channels", "use_scale_shift_norm", "resblock_updown",
                  "use_new_attention_order")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny float64 convolutions: one thread is much faster than two competing with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reference(hp: dict, seed: int = 0) -> torch.nn.Module:
    """The guided-diffusion model for hp with every parameter random (zero-initialised layers included)."""
    model = from_script_args(hp["image_size"], hp["num_channels"], hp["num_res_blocks"], hp["channel_mult"],
                             hp["attention_resolutions"], hp["learn_sigma"],
                             **{k: hp[k] for k in REFERENCE_ARGS if k in hp})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in ** 0.5)
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module", params=["small", "other"])
def converted(request, tmp_path_factory):
    hp = SMALL if request.param == "small" else OTHER
    ref = reference(hp)
    tmp = tmp_path_factory.mktemp(request.param)
    torch.save(ref.state_dict(), tmp / "model.pt")
    out = convert_checkpoint(tmp / "model.pt", tmp / "prior", None, **hp)
    return hp, ref, out


def test_output_matches_reference_float64(converted):
    hp, ref, out = converted
    prior = DiffusionPrior.from_pretrained(str(out))
    c, r = 3, hp["image_size"]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, c, r, r, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 250, 999])
    ref = ref.double()
    with torch.no_grad():
        want = ref(x, t)
        eps = prior.eps(x, t)  # moves the UNet to float64
        got = prior.unet(x, t).sample
    assert got.shape == want.shape == (4, c * (2 if hp["learn_sigma"] else 1), r, r)
    assert want.abs().max() > 0.1  # a meaningful signal, not zeros
    err = (got - want).abs().max().item()
    assert err < 1e-9 * max(1.0, want.abs().max().item()), err
    torch.testing.assert_close(eps, want[:, :c], rtol=0, atol=1e-9)
    # the prior's other views follow from eps on the checkpoint's own schedule
    ab = prior.alpha_bar(t, x)
    torch.testing.assert_close(prior.x0(x, t), (x - (1 - ab).sqrt() * want[:, :c]) / ab.sqrt(), rtol=1e-9, atol=1e-9)


def test_output_matches_reference_float32(converted):
    hp, ref, out = converted
    prior = DiffusionPrior.from_pretrained(str(out))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, hp["image_size"], hp["image_size"], generator=g)
    t = torch.tensor([10, 700])
    with torch.no_grad():
        want = ref.float()(x, t)
        got = prior.eps(x, t)
    scale = want.abs().max().item()
    assert (got - want[:, :3]).abs().max().item() < 2e-5 * max(1.0, scale)


def test_folder_layout_and_schedule(converted):
    hp, _, out = converted
    assert sorted(p.name for p in out.iterdir()) == ["conversion.json", "model_index.json", "scheduler", "unet"]
    assert list((out / "unet").glob("*.safetensors")) and not list((out / "unet").glob("*.bin"))
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folders left behind
    prior = DiffusionPrior.from_pretrained(str(out))
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)  # guided-diffusion's linear schedule
    torch.testing.assert_close(prior.schedule.alphas_cumprod, torch.cumprod(1 - betas, 0), rtol=1e-5, atol=1e-7)
    assert prior.scheduler.config.variance_type == ("learned_range" if hp["learn_sigma"] else "fixed_large")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_full_size_presets_map_every_tensor(preset):
    """The real 256 x 256 architectures, built on the meta device (no memory): every key maps, shapes agree."""
    hp = PRESETS[preset]
    with torch.device("meta"):
        ref = from_script_args(**{k: hp[k] for k in ("image_size", "num_channels", "num_res_blocks", "channel_mult",
                                                      "attention_resolutions", "learn_sigma", *REFERENCE_ARGS)})
    sd = ref.state_dict()
    config = unet_config_from_guided(**hp)
    out = convert_state_dict(sd, config, new_attention_order=hp["use_new_attention_order"])
    assert sum(v.numel() for v in out.values()) == sum(v.numel() for v in sd.values())
    assert config["out_channels"] == 6 and config["attention_head_dim"] == 64
    if preset == "ffhq256":
        # DPS's ffhq_10m.pt has attention at 16 only: the ImageNet attention layout must be refused.
        wrong = unet_config_from_guided(**{**hp, "attention_resolutions": (32, 16, 8)})
        with pytest.raises(ConversionError, match=r"(unexpected|missing) key .(in|out)put_blocks\."):
            convert_state_dict(sd, wrong)


def _small_checkpoint(tmp_path: Path, edit) -> Path:
    sd = reference(SMALL).state_dict()
    edit(sd)
    torch.save(sd, tmp_path / "model.pt")
    return tmp_path / "model.pt"


@pytest.mark.parametrize("edit, pattern", [
    (lambda sd: sd.__setitem__("input_blocks.1.0.bogus.weight", torch.zeros(3)),
     r"unexpected key 'input_blocks\.1\.0\.bogus\.weight'"),
    (lambda sd: sd.__setitem__("label_emb.weight", torch.zeros(10, 128)), r"'label_emb\.weight'.*class-conditional"),
    (lambda sd: sd.pop("out.2.bias"), r"missing key 'out\.2\.bias'"),
    (lambda sd: sd.__setitem__("middle_block.1.qkv.weight", torch.zeros(192, 64)),
     r"shape mismatch for 'middle_block\.1\.qkv\.weight': \(192, 64\) in the checkpoint, expected \(192, 64, 1\)"),
])
def test_bad_checkpoint_one_line_error(tmp_path, edit, pattern):
    path = _small_checkpoint(tmp_path, edit)
    with pytest.raises(ConversionError, match=pattern) as info:
        convert_checkpoint(path, tmp_path / "prior", None, **SMALL)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "prior").exists()


def test_wrong_hyper_parameters_are_caught(tmp_path):
    path = _small_checkpoint(tmp_path, lambda sd: None)
    with pytest.raises(ConversionError, match="wrong preset or hyper-parameters"):
        convert_checkpoint(path, tmp_path / "prior", None, **{**SMALL, "num_channels": 64})
    with pytest.raises(ConversionError, match="unexpected key|missing key"):  # the real ffhq256 layout
        convert_checkpoint(path, tmp_path / "prior", "ffhq256")


def test_overwrite(tmp_path):
    path = _small_checkpoint(tmp_path, lambda sd: None)
    convert_checkpoint(path, tmp_path / "prior", None, **SMALL)
    with pytest.raises(ConversionError, match="already exists"):
        convert_checkpoint(path, tmp_path / "prior", None, **SMALL)
    convert_checkpoint(path, tmp_path / "prior", None, overwrite=True, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "prior"]


def convert(*argv: str) -> int:
    """`davi convert guided ARGV...` in-process; the exit status."""
    return davi_main(["convert", "guided", *argv])


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert convert(str(tmp_path / "missing.pt"), str(tmp_path / "out"), "--preset", "ffhq256") == 2
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert convert(str(tmp_path / "list.pt"), str(tmp_path / "out"), "--preset", "ffhq256") == 2
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert convert(str(tmp_path / "junk.pt"), str(tmp_path / "out"), "--preset", "ffhq256") == 2
    assert convert(str(tmp_path / "list.pt"), str(tmp_path / "out"), "--preset", "ffhq512") == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines), lines
    assert "no such checkpoint" in lines[0] and "not a state dict" in lines[1]
    assert "cannot read" in lines[2] and "unknown preset 'ffhq512'" in lines[3]
    assert not (tmp_path / "out").exists()


def test_cli_converts(tmp_path, capsys):
    path = _small_checkpoint(tmp_path, lambda sd: None)
    args = ["guided", str(path), str(tmp_path / "out"), "--image-size", "32", "--num-channels", "32",
            "--num-res-blocks", "1", "--channel-mult", "1,2,2", "--attention-resolutions", "16,8",
            "--num-head-channels", "16", "--learn-sigma", "true", "--resblock-updown", "true"]
    assert davi_main(["convert", *args]) == 0
    assert "wrote" in capsys.readouterr().out
    assert DiffusionPrior.from_pretrained(str(tmp_path / "out")).unet.config.out_channels == 6


@pytest.mark.slow  # launches a Python process
def test_module_entry_point_missing_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "davi", "convert", "guided", str(tmp_path / "nope.pt"),
                           str(tmp_path / "out"), "--preset", "ffhq256"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "no such checkpoint" in proc.stderr
