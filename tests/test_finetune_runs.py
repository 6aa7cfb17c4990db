"""`charrnn train NEW --init-from RUN` end to end: the first line, config.json's init_from
and info, new characters learned from the first step, exact resume, a chain of two, runs of
format 1 and of bpe as RUN, the Python API, compare, torchrun; and every bad RUN or flag
refused in one line, exit 2, nothing written."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from typer.testing import CliRunner

import charrnn
from charrnn import checkpoint, corpus, data, finetune, memory, tokenizers, tokens
from charrnn.cli import app
from charrnn.model import count_parameters

from .conftest import TEXT, TINY, cli_train
from .test_finetune import NEW
from .test_hostile import Exploit, nan_weights, snapshot

runner = CliRunner()
V1 = Path(__file__).parent / "data" / "v1"
MORE = "Ünïcödé ßtrøkes: ~~ <<tags>> ~~\n" * 30 + NEW  # new to RUN and to NEW
# A constant learning rate, so that a run of 10 steps resumed to 20 follows one of 20.
FLAT = ["--warmup-steps", "0", "--min-lr-frac", "1"]


def train(*args: str):
    return runner.invoke(app, ["train", *map(str, args)])


def fine_tune(root: Path, run: Path, name: str, *args: str, text: str = NEW) -> Path:
    """Fine-tune `run` on `text` (written to root/NAME.txt) into root/NAME, TINY's sizes."""
    corpus = root / f"{name}.txt"
    corpus.write_text(text, encoding="utf-8")
    result = train(corpus, *TINY, "--init-from", run, *args, "--run-dir", root / name)
    assert result.exit_code == 0, result.output
    return root / name


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Base runs of TEXT (char, word with tied weights, bpe), and the char one fine-tuned
    on NEW."""
    root = tmp_path_factory.mktemp("finetune")
    cli_train(root, TEXT, name="char")
    cli_train(root, TEXT, "--tokenizer", "word", "--embedding", "32", name="word")
    cli_train(root, TEXT, "--tokenizer", "bpe", "--vocab-size", "320", name="bpe")
    fine_tune(root, root / "char", "tuned")
    return root


def best_step(run: Path) -> int:
    """The step of a run's best model: the one a run fine-tuned from it begins at."""
    return json.loads((run / "config.json").read_text())["best_step"]


def first_line(run: Path, text: str) -> str:
    """The first line `charrnn train` printed for a run (re-made with --steps 1)."""
    out = run.parent / f"{run.name}-again"
    shutil.rmtree(out, ignore_errors=True)
    result = train(text, *TINY, "--init-from", run, "--steps", "1", "--run-dir", out)
    assert result.exit_code == 0, result.output
    return result.stderr.splitlines()[0]


def test_the_first_line_says_where_the_run_began_and_the_fine_tuning_defaults(root):
    line = first_line(root / "char", root / "tuned.txt")
    assert f"; fine-tuning defaults: --lr {finetune.LR_SCALE * 8e-3:g}; from" in line
    added, weights = len(set(NEW) - set(TEXT)), charrnn.load(root / "char").model
    step = best_step(root / "char")
    assert line.endswith(f"; from {root / 'char'} (step {step}): {count_parameters(weights):,} "
                         f"weights; vocabulary {len(set(TEXT)) + 1} + {added} new "
                         "characters")  # fmt: skip
    given = train(root / "tuned.txt", *TINY, "--init-from", root / "char", "--lr", "0.01",
                  "--steps", "1", "--run-dir", root / "given")  # fmt: skip
    assert given.exit_code == 0, given.output
    line = given.stderr.splitlines()[0]
    assert "--lr 0.01 " in line and "fine-tuning defaults" not in line
    assert json.loads((root / "given" / "config.json").read_text())["train"]["lr"] == 0.01


def test_config_json_records_where_it_began_and_info_shows_it(root):
    tuned = json.loads((root / "tuned" / "config.json").read_text())
    weights = (root / "char" / "model.safetensors").read_bytes()
    assert tuned["init_from"] == {
        "run": str(root / "char"), "step": best_step(root / "char"), "sha256": hashlib.sha256(weights).hexdigest(),
        "vocab_size": len(set(TEXT)) + 1,
    }  # fmt: skip
    assert tuned["format_version"] == checkpoint.FORMAT_VERSION
    assert tuned["model"]["hidden"] == 32 and tuned["tokenizer"]["tokenizer"] == "char"
    assert "init_from" not in json.loads((root / "char" / "config.json").read_text())
    run = charrnn.load(root / "tuned")
    assert run.config.init_from.step == tuned["init_from"]["step"] and run.config.init_from.run == str(root / "char")
    info = runner.invoke(app, ["info", str(root / "tuned"), "--json"])
    assert json.loads(info.stdout)["init_from"] == tuned["init_from"]
    table = runner.invoke(app, ["info", str(root / "tuned")])
    words = " ".join(table.stdout.split())  # the table's rows, folded at 80 columns, as one
    sha, size = tuned["init_from"]["sha256"][:12], len(set(TEXT)) + 1
    said = f"init from {root / 'char'} at step {best_step(root / 'char')} (model.safetensors sha256 {sha}...); its"
    assert f"{said} {size} tokens, {len(set(NEW) - set(TEXT))} added" in words


def test_new_characters_are_learned_and_old_ids_keep_their_meaning(root):
    base, tuned = charrnn.load(root / "char"), charrnn.load(root / "tuned")
    V = base.tokenizer.vocab_size
    assert tuned.tokenizer.symbols[: V - 1] == base.tokenizer.symbols
    assert tuned.tokenizer.symbols[V - 1 :] == sorted(set(NEW) - set(TEXT))
    # the first step raises the probability of each new character where it comes next in
    # the window it read, from below TOLERANCE / K (at the start, the model set-up made)
    tok = tuned.tokenizer
    text = corpus.read([str(root / "tuned.txt")])
    train_ids, _ = data.split(tokens.token_ids(text, tok, "none").ids, 0.1)
    model = finetune.load(root / "char").grown_model(tuned.config.model, tok, train_ids).eval()
    after = first_step(root)
    x, y = data.Streams.of(train_ids, 4).window(0, 16)  # TINY's first window [B, T]
    x, y = x.long(), y.long()
    with torch.no_grad():
        p0 = model(x)[0].softmax(-1).gather(-1, y[..., None])[..., 0][y >= V]
        p1 = after(x)[0].softmax(-1).gather(-1, y[..., None])[..., 0][y >= V]
    assert len(p0) >= 5 and (p0 <= finetune.TOLERANCE).all() and (p1 > p0).all()


def first_step(root: Path):
    out = root / "one-step"
    if not out.exists():
        result = train(root / "tuned.txt", *TINY, "--init-from", root / "char", "--steps", "1",
                       "--warmup-steps", "0", "--eval-every", "1", "--run-dir", out)  # fmt: skip
        assert result.exit_code == 0, result.output
    return charrnn.load(out).model


def test_a_fine_tuned_run_resumes_exactly(root):
    whole = fine_tune(root, root / "char", "whole", *FLAT, "--steps", "20")
    cut = fine_tune(root, root / "char", "cut", *FLAT, "--steps", "10")
    result = train("--resume", cut, "--steps", "20")
    assert result.exit_code == 0, result.output
    strip = lambda run: [{k: v for k, v in m.items() if k != "elapsed"}  # noqa: E731
                         for m in checkpoint.read_metrics(run)]  # fmt: skip
    assert strip(cut) == strip(whole)  # losses to the bit
    for name in ("model.safetensors", "last/model.safetensors"):
        a = safetensors.torch.load_file(cut / name)
        b = safetensors.torch.load_file(whole / name)
        assert all(torch.equal(a[k], b[k]) for k in b), name
    config = json.loads((cut / "config.json").read_text())
    assert config["init_from"] == json.loads((whole / "config.json").read_text())["init_from"]


def test_a_fine_tuned_run_is_a_run_to_fine_tune_from(root):
    again = fine_tune(root, root / "tuned", "chain", text=MORE)
    first, second = charrnn.load(root / "tuned"), charrnn.load(again)
    V = first.tokenizer.vocab_size
    assert second.tokenizer.symbols[: V - 1] == first.tokenizer.symbols
    assert set(second.tokenizer.symbols[V - 1 :]) == set(MORE) - set(NEW) - set(TEXT)
    assert second.config.init_from.run == str(root / "tuned")
    assert second.config.init_from.vocab_size == V


@pytest.mark.parametrize("name", ["char-lstm", "word-gru"])
def test_a_format_1_run_fine_tunes(root, name, tmp_path):
    old = charrnn.load(V1 / name)
    run = fine_tune(tmp_path, V1 / name, "tuned", "--layers", str(old.config.model.layers),
                    "--hidden", "16", text=MORE + TEXT)  # fmt: skip
    tuned = charrnn.load(run)
    V = old.tokenizer.vocab_size
    assert [tuned.tokenizer.token_text(i) for i in range(V)] == [
        old.tokenizer.token_text(i) for i in range(V)
    ]
    assert tuned.tokenizer.vocab_size > V and tuned.config.model.cell == old.config.model.cell
    assert np.array_equal(tuned.tokenizer.encode(TEXT), old.tokenizer.encode(TEXT))


def test_a_word_run_grows_its_words_and_keeps_its_tied_weights(root):
    run = fine_tune(root, root / "word", "word-tuned", "--embedding", "32")
    base, tuned = charrnn.load(root / "word"), charrnn.load(run)
    assert tuned.config.model.tie_weights and tuned.model.decoder.weight is tuned.model.embed.weight
    V = base.tokenizer.vocab_size
    assert tuned.tokenizer.tokens[:V] == base.tokenizer.tokens
    assert "{wizards}" in tuned.tokenizer.tokens[V:]  # a word as the text spaces it
    assert tuned.tokenizer.split == base.tokenizer.split == "space"
    assert tuned.config.tokenizer.word_split == "space"
    assert tuned.config.tokenizer.vocab_size == V + finetune.GROWTH  # at most 10,000 more


def test_a_bpe_run_keeps_its_sentencepiece_model(root):
    line = first_line(root / "bpe", root / "tuned.txt")
    assert line.endswith("its bpe model of 320 pieces kept (byte fallback reads any text)")
    tuned = fine_tune(root, root / "bpe", "bpe-tuned", text=MORE)
    base = tokenizers.load(root / "bpe")
    assert tokenizers.load(tuned).files() == base.files()  # the same model, byte for byte
    run = charrnn.load(tuned)
    assert run.tokenizer.decode(run.tokenizer.encode(MORE)) == MORE  # by its byte fallback


def test_the_python_api_fine_tunes(root):
    run = charrnn.train(root / "tuned.txt", root / "api", init_from=root / "char", steps=5,
                        hidden=32, embedding=8, batch_size=4, seq_len=16, device="cpu")  # fmt: skip
    assert run.config.init_from.run == str(root / "char") and run.config.step == 5
    assert run.config.train.lr == finetune.LR_SCALE * 8e-3
    with pytest.raises(charrnn.CharrnnError, match="keeps its model: --hidden 64"):
        charrnn.train(root / "tuned.txt", root / "api2", init_from=root / "char", hidden=64)
    assert not (root / "api2").exists()


def test_compare_fine_tunes_every_run_from_run(root):
    out = root / "cmp"
    args = ["compare", str(root / "tuned.txt"), "--init-from", str(root / "char"), "--seeds",
            "2", "--steps", "4", "--eval-every", "2", *TINY[4:], "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["lstm-seed0", "lstm-seed1"]
    for name in ("lstm-seed0", "lstm-seed1"):
        assert charrnn.load(out / name).config.init_from.run == str(root / "char")
    assert json.loads((out / "compare.json").read_text())["plan"]["init_from"] == str(root / "char")
    other = runner.invoke(app, [*args[:3], str(root / "tuned"), *args[4:]])
    assert other.exit_code == 2 and "--init-from " in other.stderr
    assert f"{root / 'tuned'} here, {root / 'char'} there" in other.stderr
    gru = runner.invoke(app, [*args, "--cells", "gru"])
    assert gru.exit_code == 2 and "--cell gru (RUN's: --cell lstm)" in gru.stderr


# Bad input -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def damaged(root):
    """Copies of the char run, each damaged one way."""
    names = {}
    for name in ("nan", "pickled", "truncated", "noweights", "badconfig"):
        names[name] = shutil.copytree(root / "char", root / name)
    nan_weights(names["nan"] / "model.safetensors")
    torch.save({"x": Exploit(root / "pwned")}, names["pickled"] / "model.safetensors")
    data = (names["truncated"] / "model.safetensors").read_bytes()
    (names["truncated"] / "model.safetensors").write_bytes(data[: len(data) // 2])
    (names["noweights"] / "model.safetensors").unlink()
    (names["badconfig"] / "config.json").write_text('{"format_version": 2, "model": 3}')
    (root / "own").mkdir(exist_ok=True)
    (root / "own" / "notes.txt").write_text("mine\n")
    return names


# (arguments after `train NEW TINY`, what the one line says); {x}: root/x
BAD = [
    (["--init-from", "{missing}"], "--init-from {missing}: no such run directory"),
    (["--init-from", "{own}"], "--init-from {own}: not a run directory (no config.json)"),
    (["--init-from", "{text}"], "tuned.txt: a file, not a run directory"),
    (["--init-from", "{nan}"], "model.safetensors: embed.weight holds NaN or infinite"),
    (["--init-from", "{pickled}"], "pickled/model.safetensors: not a readable safetensors"),
    (["--init-from", "{truncated}"], "truncated/model.safetensors: not a readable safetens"),
    (["--init-from", "{noweights}"], "noweights: no model.safetensors yet"),
    (["--init-from", "{badconfig}"], "badconfig/config.json: no 'model' section"),
    (["--init-from", "{char}", "--hidden", "64", "--layers", "2"],
     "keeps its model: --layers 2 (RUN's: --layers 1), --hidden 64 (RUN's: --hidden 32); "
     "leave them out (--dropout and the training settings may change)"),
    (["--init-from", "{char}", "--cell", "gru"], "--cell gru (RUN's: --cell lstm); leave it"),
    (["--init-from", "{char}", "--tie-weights"], "--tie-weights (RUN's: --no-tie-weights)"),
    (["--init-from", "{char}", "--forget-bias", "1"], "--forget-bias 1 (RUN's: none)"),
    (["--init-from", "{char}", "--tokenizer", "word"], "--tokenizer word: --init-from"),
    (["--init-from", "{char}", "--vocab-size", "99"], "--vocab-size is for word, bpe"),
    (["--init-from", "{word}", "--embedding", "32", "--word-split", "punct"],
     "--word-split punct: --init-from"),
    (["--init-from", "{word}", "--embedding", "32", "--vocab-size", "10"],
     "--vocab-size 10 is smaller than the"),
    (["--init-from", "{word}", "--embedding", "32", "--vocab-size", str(2**31 + 1)],
     "is past the 2,147,483,648"),
    (["--init-from", "{bpe}", "--vocab-size", "500"], "keeps its bpe model of 320 pieces"),
    (["--init-from", "{char}", "--resume", "{tuned}"], "--init-from starts a new run"),
    (["--init-from", "{char}", "--run-dir", "{char}"], "{char} already holds a run"),
]  # fmt: skip


@pytest.mark.parametrize("args, needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_init_from_is_one_line_exit_2_and_writes_nothing(root, damaged, args, needle):
    names = {p.name: str(p) for p in root.iterdir() if p.is_dir()}
    names |= {"missing": str(root / "missing"), "text": str(root / "tuned.txt")}
    args = [a.format(**names) if a.startswith("{") else a for a in args]
    if "--resume" in args:
        line = ["train", *args]
    else:
        where = [] if "--run-dir" in args else ["--run-dir", str(root / "new")]
        line = ["train", names["text"], *TINY, *where, *args]
    before = snapshot(root)
    result = runner.invoke(app, line)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("charrnn: error: "), result.stderr
    assert needle.format(**names) in lines[0], lines[0]
    assert "Traceback" not in result.output and result.stdout == ""
    assert snapshot(root) == before and not (root / "new").exists()
    assert not (root / "pwned").exists()


def test_a_grown_vocabulary_that_memory_cannot_hold_is_refused(root, monkeypatch):
    words = " ".join(f"w{i}x" for i in range(3000)) + "\n"  # 3,000 words RUN lacks
    (root / "words.txt").write_text(words * 2, encoding="utf-8")
    base = charrnn.load(root / "word").config.model
    from dataclasses import replace

    small = memory.training_bytes(replace(base, vocab_size=base.vocab_size + 10), 4, 16)
    monkeypatch.setattr(memory, "available", lambda device: (small, "this machine has"))
    before = snapshot(root)
    result = train(root / "words.txt", *TINY, "--embedding", "32", "--init-from", root / "word",
                   "--run-dir", root / "new")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "needs about" in result.stderr and len(result.stderr.splitlines()) == 1
    assert snapshot(root) == before and not (root / "new").exists()


def test_two_ranks_fine_tune_as_one_process_of_twice_the_batch(root):
    from .test_distributed import ARGS, charrnn, finish, val_losses

    procs = {
        name: charrnn(
            ranks,
            root / f"{name}.log",
            "train",
            root / "tuned.txt",
            *ARGS,
            "--init-from",
            root / "char",
            "--batch-size",
            batch,
            "--steps",
            10,
            "--run-dir",
            root / name,
        )  # fmt: skip
        for name, ranks, batch in (("ddp-two", 2, 2), ("ddp-one", 1, 4))
    }
    logs = {name: finish(proc, root / f"{name}.log") for name, proc in procs.items()}
    assert "on 2 ranks x cpu" in logs["ddp-two"] and "new characters" in logs["ddp-two"]
    two, one = val_losses(root / "ddp-two"), val_losses(root / "ddp-one")
    assert [m[:2] for m in two] == [m[:2] for m in one] == [(5, 320), (10, 640)]
    for a, b in zip(one, two):
        assert b[2:] == pytest.approx(a[2:], rel=1e-5)
    config = json.loads((root / "ddp-two" / "config.json").read_text())
    assert config["world_size"] == 2 and config["init_from"]["run"] == str(root / "char")


def test_a_word_run_with_a_shortlist_keeps_it_and_its_class_as_its_words_grow(root):
    """RUN's shortlist is part of its model: the tuned run keeps it (a flag that would
    change it is refused), and the new words join the rest (they are numbered after it)."""
    cli_train(root, TEXT, "--tokenizer", "word", "--embedding", "32", "--shortlist", "6",
              name="word-short")  # fmt: skip
    run = fine_tune(root, root / "word-short", "word-short-tuned", "--embedding", "32")
    base, tuned = charrnn.load(root / "word-short"), charrnn.load(run)
    assert base.model.head == tuned.model.head == tuned.config.model.shortlist == 6
    assert tuned.config.model.vocab_size > base.config.model.vocab_size
    logits, _ = tuned.model(torch.arange(tuned.config.model.vocab_size)[None])
    torch.testing.assert_close(logits.exp().sum(-1), torch.ones(1, logits.shape[1]))
    refused = train(root / "word-short-tuned.txt", *TINY, "--init-from", root / "word-short",
                    "--embedding", "32", "--shortlist", "9", "--run-dir", root / "no")  # fmt: skip
    assert refused.exit_code == 2 and "--shortlist 9 (RUN's: --shortlist 6)" in refused.stderr
