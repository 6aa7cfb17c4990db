"""The Python API: what is public, beam search against enumeration, --prime-file, a run
trained on CUDA used on a CPU, and errors that read as the CLI's. (The example of
docs/python-api.md runs in test_docs.py.)"""

import itertools
import json
import math

import pytest
import torch
from typer.testing import CliRunner

import charrnn
from charrnn import beam, checkpoint
from charrnn.cli import app
from charrnn.model import ModelConfig, RNNLanguageModel

from .conftest import TEXT, cli_train

runner = CliRunner()


def test_only_what_init_exports_is_public():
    assert set(charrnn.__all__) == {"CharrnnError", "Metrics", "Report", "Run", "Trace",
                                    "load", "train"}  # fmt: skip


# Beam search ---------------------------------------------------------------------------


def best_by_enumeration(model, length, eos=0):
    """Every hypothesis beam search can end with (tokens ending at <eos>, or `length`
    tokens without one), scored by log-probability per token, best first."""
    V = model.config.vocab_size
    found = []
    for n in range(1, length + 1):
        for ids in itertools.product(range(V), repeat=n):
            if eos in ids[:-1] or (n < length and ids[-1] != eos):
                continue
            with torch.no_grad():
                logits, _ = model(torch.tensor([[eos, *ids[:-1]]]))
            logp = logits[0].log_softmax(-1)[torch.arange(n), torch.tensor(ids)].sum().item()
            found.append((ids, logp / n))
    return sorted(found, key=lambda f: -f[1])


def test_beam_search_finds_the_best_sequences_known_by_enumeration():
    torch.manual_seed(3)
    model = RNNLanguageModel(ModelConfig(vocab_size=4, hidden=6, embedding=3)).eval()
    with torch.no_grad():
        model.decoder.bias.mul_(0).add_(torch.tensor([0.5, 0.0, -0.3, 0.2]))
    truth = best_by_enumeration(model, length=3)
    wide = beam.search(model, [0], beams=64, length=3, eos_id=0)  # wider than all prefixes
    assert [h.ids for h in wide[:6]] == [ids for ids, _ in truth[:6]]
    for h, (_, score) in zip(wide, truth, strict=False):
        assert h.score == pytest.approx(score, abs=1e-5)
    narrow = beam.search(model, [0], beams=2, length=3, eos_id=0)
    assert narrow[0].score <= truth[0][1] + 1e-6  # a narrow beam can only do worse
    assert narrow == beam.search(model, [0], beams=2, length=3, eos_id=0)  # deterministic
    greedy, ids = beam.search(model, [0], beams=1, length=3, eos_id=0)[0], [0]
    with torch.no_grad():
        for _ in greedy.ids:
            ids.append(model(torch.tensor([ids]))[0][0, -1].argmax().item())
    assert greedy.ids == tuple(ids[1 : 1 + len(greedy.ids)])  # one beam is greedy


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    cli_train(root, TEXT, name="tiny")
    (root / "tiny").rename(root / "run")
    return root


def test_sample_beam_prints_the_n_best_deterministically(trained):
    args = ["sample", str(trained / "run"), "--beam", "4", "--num-samples", "3", "--length",
            "20", "--prime", "All"]  # fmt: skip
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    run = charrnn.load(trained / "run")
    best = run.sample("All", beam=4, num_samples=3, length=20)
    assert len(best) == 3 and all(len(t) == 20 for t in best)
    # each after its prime, on a line of its own (a sample's own newlines are kept)
    assert first.stdout == second.stdout == "".join(f"All{t}\n" for t in best)


def test_prime_file_is_read_as_a_corpus_file_and_excludes_prime(trained):
    (trained / "prime.txt").write_text("All:", encoding="utf-8")
    run = str(trained / "run")
    from_file = runner.invoke(app, ["sample", run, "--prime-file", str(trained / "prime.txt"),
                                    "--seed", "4", "--length", "30"])  # fmt: skip
    given = runner.invoke(app, ["sample", run, "--prime", "All:", "--seed", "4", "--length",
                                "30"])  # fmt: skip
    assert from_file.exit_code == 0 and from_file.stdout == given.stdout
    both = runner.invoke(app, ["sample", run, "--prime", "x", "--prime-file", "prime.txt"])
    assert both.exit_code == 2 and "give --prime or --prime-file, not both" in both.stderr
    (trained / "binary.txt").write_bytes(b"All\x00")
    bad = runner.invoke(app, ["sample", run, "--prime-file", str(trained / "binary.txt")])
    assert bad.exit_code == 2 and "binary file (NUL byte at offset 3)" in bad.stderr


# Trained on CUDA, used on a CPU ---------------------------------------------------------


def test_a_run_saved_with_cuda_tensors_samples_and_resumes_on_a_cpu(trained, monkeypatch):
    run = trained / "cuda-run"
    import shutil

    shutil.copytree(trained / "run", run)
    state = torch.load(run / "last" / "trainer_state.pt", weights_only=True)
    # Save it as a CUDA process does: every tensor's storage tagged "cuda:0".
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    torch.save(state, run / "last" / "trainer_state.pt")
    monkeypatch.undo()
    # ... in mixed precision, which a CPU does not train in
    config = json.loads((run / "config.json").read_text())
    config["train"]["precision"] = "fp16"
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="CUDA"):  # what a plain torch.load does here
        torch.load(run / "last" / "trainer_state.pt", weights_only=True)
    sampled = runner.invoke(app, ["sample", str(run), "--length", "10", "--seed", "1"])
    assert sampled.exit_code == 0, sampled.output
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--steps", "25",
                                  "--device", "cpu"])  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert "trained in fp16 on CUDA and carries on in fp32 on cpu" in resumed.output
    assert charrnn.load(run).config.step == 25
    assert json.loads((run / "config.json").read_text())["train"]["precision"] == "fp32"
    fp16 = runner.invoke(app, ["train", "--resume", str(run), "--steps", "30", "--device", "cpu",
                               "--precision", "fp16"])  # fmt: skip
    assert fp16.exit_code == 2 and "--precision fp16 needs a CUDA device" in fp16.stderr


def test_weights_hold_no_device():
    model = RNNLanguageModel(ModelConfig(vocab_size=5, hidden=4, embedding=2))
    data = checkpoint.weights_bytes(model)
    assert b"cuda" not in data and b"cpu" not in data  # safetensors: dtypes and shapes only


# Errors --------------------------------------------------------------------------------


def test_api_errors_are_the_cli_lines(trained):
    cases = [
        (lambda: charrnn.load(trained / "nope"), ["info", str(trained / "nope")]),
        (lambda: charrnn.load(trained / "run").sample("Zü"),
         ["sample", str(trained / "run"), "--prime", "Zü"]),
        (lambda: charrnn.load(trained / "run").sample(top_p=1.5),
         ["sample", str(trained / "run"), "--top-p", "1.5"]),
        (lambda: charrnn.train(str(trained / "tiny.txt"), hidden=0),
         ["train", str(trained / "tiny.txt"), "--hidden", "0"]),
    ]  # fmt: skip
    for call, args in cases:
        with pytest.raises(charrnn.CharrnnError) as raised:
            call()
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert result.stderr.strip() == f"charrnn: error: {raised.value}"
    with pytest.raises(charrnn.CharrnnError, match="unknown setting 'hiden'; did you mean"):
        charrnn.train(str(trained / "tiny.txt"), hiden=8)
    assert math.isfinite(charrnn.load(trained / "run").score("All: speak.").loss)
