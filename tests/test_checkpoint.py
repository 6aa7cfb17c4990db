import json
import os
import pickle
import random
import stat

import pytest
import torch

import charrnn
from charrnn import checkpoint
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.tokenizers import CharTokenizer

from .conftest import load_last, start_run


def make_run(tmp_path, tie=False):
    tok = CharTokenizer.fit("hello world")
    config = ModelConfig(
        vocab_size=tok.vocab_size, layers=2, hidden=8, embedding=8, tie_weights=tie
    )
    torch.manual_seed(0)
    model = RNNLanguageModel(config)
    start_run(tmp_path, model, tok)
    checkpoint.save_weights(tmp_path, model)
    checkpoint.update_config(tmp_path, {"step": 1})
    return model, tok


def trainer_state(step: int, **extra) -> dict:
    """A trainer state with every key Trainer.trainer_state() saves (load_last checks them)."""
    return {"optimizer": {"state": {}, "param_groups": []}, "progress": {"step": step},
            "state": [], "torch_rng": torch.get_rng_state(), "cuda_rng": [],
            "python_rng": random.getstate(), "since_eval": [0.0, 0], **extra}  # fmt: skip


@pytest.mark.parametrize("tie", [False, True])
def test_save_then_load_gives_identical_logits(tmp_path, tie):
    model, tok = make_run(tmp_path, tie)
    run = charrnn.load(tmp_path)
    ids = torch.tensor([tok.encode("hello").tolist()])
    torch.testing.assert_close(run.model(ids)[0], model(ids)[0], rtol=0, atol=0)
    assert run.config.step == 1 and run.tokenizer.symbols == tok.symbols


def test_last_checkpoint_round_trips_trainer_state(tmp_path):
    model, _ = make_run(tmp_path)
    state = trainer_state(3, rng=torch.get_rng_state(), python=(3, (1, 2), None))
    checkpoint.save_last(tmp_path, model, state)
    loaded, saved = load_last(tmp_path)
    assert saved["progress"] == {"step": 3} and torch.equal(saved["rng"], state["rng"])
    assert not (tmp_path / ".last.tmp").exists() and not (tmp_path / ".last.old").exists()


def test_a_crash_mid_swap_leaves_the_previous_last_loadable(tmp_path):
    model, _ = make_run(tmp_path)
    checkpoint.save_last(tmp_path, model, trainer_state(1))
    (tmp_path / "last").rename(tmp_path / ".last.old")  # killed between the two renames
    _, saved = load_last(tmp_path)
    assert saved["progress"] == {"step": 1}


def test_a_crafted_pickle_is_refused_without_running(tmp_path):
    model, _ = make_run(tmp_path)
    checkpoint.save_last(tmp_path, model, trainer_state(0))
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "last" / "trainer_state.pt").write_bytes(pickle.dumps({"x": Exploit()}))
    with pytest.raises(checkpoint.CheckpointError, match="trainer_state.pt"):
        load_last(tmp_path)
    assert not marker.exists()


def test_truncated_weights_are_named(tmp_path):
    make_run(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(checkpoint.CheckpointError, match="model.safetensors"):
        charrnn.load(tmp_path)


def test_wrong_format_version_and_vocab_mismatch_are_named(tmp_path):
    make_run(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(checkpoint.CheckpointError, match="format_version 99"):
        charrnn.load(tmp_path)
    config["model"]["vocab_size"] += 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(checkpoint.CheckpointError, match="tokenizer.json.*vocab_size"):
        charrnn.load(tmp_path)


def test_missing_tensor_is_named(tmp_path):
    import safetensors.torch

    make_run(tmp_path)
    path = tmp_path / "model.safetensors"
    tensors = safetensors.torch.load_file(path)
    del tensors["decoder.bias"]
    safetensors.torch.save_file(tensors, path)
    with pytest.raises(checkpoint.CheckpointError, match="missing.*decoder.bias"):
        charrnn.load(tmp_path)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="not a run directory"):
        checkpoint.read_config(tmp_path)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    checkpoint.atomic_write(tmp_path / "a.bin", b"one")
    checkpoint.atomic_write(tmp_path / "a.bin", b"two")
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
    assert (tmp_path / "a.bin").read_bytes() == b"two"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_files_get_the_permissions_the_umask_gives(tmp_path, umask, mode):
    """A run dir shared with a group (or a PNG served from it) is readable as any file the
    user writes is: not mkstemp's 0600."""
    old = os.umask(umask)
    try:
        checkpoint.atomic_write(tmp_path / "a.bin", b"one")
        (tmp_path / "plain").write_bytes(b"one")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == mode
