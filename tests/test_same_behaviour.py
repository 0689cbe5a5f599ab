"""The library's shape may change; what it trains may not.

The digest below is the exported mapper of a fixed-seed 20-step SR x4 run (batch 4, one thread),
recorded before the trainer/recipe restructuring (issue 10). Any change to the loop, the recipe,
the losses, the operators or the data order that alters training shows up here. A deliberate
change of behaviour must update the digest in the same commit and say why.
"""

import pytest
import torch

from davi.config import load_config
from davi.export import load_export
from davi.recipes import train_job
from davi.trainer import weights_digest

SR4_20_STEPS = "aa2c682ee8faa289389b3b48de7d1b98991d21d51a9e36d9db93a9c3930a353b"


@pytest.mark.slow
def test_sr4_run_trains_the_recorded_weights(tmp_path):
    cfg = load_config("configs/sr4_mnist.yaml", [
        f"train.output_dir={tmp_path}", "train.max_steps=20", "train.batch_size=4", "train.seed=0",
        "log.progress=false", "log.num_val=4", "log.num_samples=2", "log.image_every=0", "train.checkpoint_every=10"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float reductions depend on the thread count
    try:
        train_job(cfg)
    finally:
        torch.set_num_threads(threads)
    mapper, _, _ = load_export(tmp_path / "export")
    assert weights_digest(mapper) == SR4_20_STEPS
