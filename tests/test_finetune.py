"""Fine-tuning's pieces (finetune.py): a grown vocabulary keeps every id's meaning (char,
word, format-1 word), RUN's model is carried over so that before the first step it
predicts as RUN did, and the new tokens' rows start unlikely but learn. The command, its
records and its refusals: test_finetune_runs.py."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from charrnn import checkpoint, corpus, finetune, tokenizers, tokens
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.tokenizers import CharTokenizer
from charrnn.tokenizers.words import LegacyWordTokenizer, WordTokenizer

from .conftest import TEXT, start_run

# A text of another kind: characters and words TEXT lacks, and some that it has.
NEW = ("Zoë's quick jazz: 42 vexed {wizards} jump!\nFirst Citizen:\nYou are all resolved.\n\n") * 30


# The vocabulary ----------------------------------------------------------------------


def test_a_grown_char_vocabulary_keeps_every_id_and_appends_the_new_characters():
    old = CharTokenizer.fit(TEXT)
    grown = old.grown([NEW[:500], NEW[500:]])
    added = sorted(set(NEW) - set(TEXT))
    assert grown.symbols == old.symbols + added  # in code-point order after RUN's
    assert grown.vocab_size == old.vocab_size + len(added)
    assert np.array_equal(grown.encode(TEXT), old.encode(TEXT))  # every old id, its meaning
    assert [grown.token_text(old.vocab_size + i) for i in range(len(added))] == added
    assert grown.decode(grown.encode(NEW)) == NEW
    assert grown.count_words(grown.encode(NEW)) == tokenizers.text_words([NEW])
    again = tokenizers.from_files(grown.files())  # ids in the order tokenizer.json lists
    assert again.symbols == grown.symbols and np.array_equal(again.encode(NEW), grown.encode(NEW))
    assert grown.grown(NEW).symbols == grown.symbols  # nothing new: the same vocabulary


def test_a_tokenizer_json_of_sorted_symbols_reads_with_the_ids_it_always_had():
    symbols = sorted(set(TEXT))
    data = {"type": "char", "specials": ["<eos>"], "symbols": symbols}  # as 0.1.0 wrote it
    tok = tokenizers.from_files({"tokenizer.json": json.dumps(data).encode()})
    assert tok.encode(TEXT).tolist() == [symbols.index(c) + 1 for c in TEXT]


def test_a_grown_word_vocabulary_keeps_ids_and_adds_the_commonest_new_words():
    old = WordTokenizer.fit(TEXT, vocab_size=1000)
    text = NEW + "Once upon a midnight dreary.\n" * 2
    grown = old.grown(text, most=1000)
    assert grown.tokens[: old.vocab_size] == old.tokens
    assert np.array_equal(grown.encode(TEXT), old.encode(TEXT))  # the same glue here
    new = grown.tokens[old.vocab_size :]
    assert new[:2] == ["!", "'"] and "midnight" in new and "First" not in new
    assert "!" in grown.glue_left  # a new mark glues as the new text has it: "jump!"
    assert grown.decode(grown.encode(text)) == text  # every word known: exact
    few = old.grown(text, most=3)  # the three commonest (ties in code-point order)
    assert few.tokens[old.vocab_size :] == new[:3]
    once = old.grown(text, most=1000, min_count=3)  # seen at least 3 times
    assert "midnight" not in once.tokens and "jazz" in once.tokens


def test_a_grown_word_vocabulary_glues_as_the_new_text_does():
    spaced = "a word , and a word ; then ( one ) .\n" * 20  # as WikiText writes it
    old = WordTokenizer.fit(spaced + "it ends : here\n", vocab_size=1000)
    assert "," not in old.glue_left and ":" not in old.glue_left
    glued = "a word, and a word; then (one).\n" * 20  # as most text is written
    grown = old.grown(glued, most=1000)
    assert grown.tokens[: old.vocab_size] == old.tokens  # the ids keep their meaning
    assert {",", ";", ")"} <= set(grown.glue_left) and "(" in grown.glue_right
    assert ":" not in grown.glue_left  # not in the new text: as it was
    joins = [(tok.encode(glued) == 2).sum() for tok in (old, grown)]
    assert joins == [100, 0]  # a <join> at each glued mark, and none
    assert grown.decode(grown.encode(glued)) == glued


def test_a_format_1_word_vocabulary_grows_too():
    old = LegacyWordTokenizer.fit(TEXT, vocab_size=1000)
    grown = old.grown(NEW, most=1000)
    assert grown.tokens[: old.vocab_size] == old.tokens
    assert np.array_equal(grown.encode(TEXT), old.encode(TEXT))
    assert grown.decode(grown.encode(NEW)) == NEW


def test_the_token_cache_never_gives_the_ids_of_another_vocabulary(tmp_path):
    (tmp_path / "new.txt").write_text(NEW, encoding="utf-8")
    text = corpus.read([str(tmp_path / "new.txt")])
    a = CharTokenizer.fit(TEXT).grown(NEW)
    b = CharTokenizer.fit("zZ{}").grown(TEXT + NEW)  # the same characters, other ids
    assert sorted(a.symbols) == sorted(b.symbols) and a.symbols != b.symbols
    ids_a, ids_b = (tokens.token_ids(text, tok, "none").ids for tok in (a, b))
    assert not np.array_equal(ids_a, ids_b)
    assert a.decode(ids_a) == NEW == b.decode(ids_b)


# The weights -------------------------------------------------------------------------


def base_run(tmp_path, cell="lstm", kind="char", tie=False, scale=4.0, layers=2):
    """A run directory holding a model of TEXT whose weights are `scale` times PyTorch's
    initial ones (a trained model's are larger), read back by finetune.load."""
    tok = CharTokenizer.fit(TEXT) if kind == "char" else WordTokenizer.fit(TEXT, 1000)
    torch.manual_seed(0)
    config = ModelConfig(tok.vocab_size, cell=cell, layers=layers, hidden=24,
                         embedding=24 if tie else 8, tie_weights=tie)  # fmt: skip
    model = RNNLanguageModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    start_run(tmp_path / "run", model, tok)
    checkpoint.save_weights(tmp_path / "run", model)
    return finetune.load(tmp_path / "run")


def grown_model(base, text=NEW):
    old = base.tokenizer
    tok = old.grown(text) if old.tokenizer == "char" else old.grown(text, most=1000)
    ids = np.concatenate([[0], tok.encode(text)])  # <eos> first, as a corpus's ids
    config = replace(base.config.model, vocab_size=tok.vocab_size)
    return base.grown_model(config, tok, ids).eval(), tok


def log_probs(model, ids, vocab):
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(ids, dtype=torch.long))
    return logits.double().log_softmax(-1)[..., :vocab]


@pytest.mark.parametrize(
    "cell, kind, tie",
    [("lstm", "char", False), ("gru", "char", True), ("rnn", "char", False),
     ("mingru", "char", False), ("noaf", "char", False)],
)  # fmt: skip
def test_before_the_first_step_the_fine_tuned_model_predicts_as_run(tmp_path, cell, kind, tie):
    base = base_run(tmp_path, cell, kind, tie)
    model, tok = grown_model(base)
    V = base.tokenizer.vocab_size
    assert tok.vocab_size > V
    rng = np.random.default_rng(0)
    texts = [np.concatenate([[0], base.tokenizer.encode(TEXT)])[None]]  # RUN's own text
    known = tok.encode(NEW)
    texts.append(np.concatenate([[0], known[known < V]])[None])  # what RUN reads of the new
    texts.append(rng.integers(0, V, size=(8, 400)))  # random ids, 8 streams
    for ids in texts:
        before, after = log_probs(base.model, ids, V), log_probs(model, ids, V)
        assert (after - before).abs().max() <= 1e-5  # the tolerance, float32 included
        new_mass = 1 - after.exp().sum(-1)
        assert new_mass.max() <= 2 * finetune.TOLERANCE  # the new tokens start unlikely


def test_new_rows_are_the_mean_embedding_zero_decoder_weights_and_a_measured_bias(tmp_path):
    base = base_run(tmp_path)
    model, tok = grown_model(base)
    V, K = base.tokenizer.vocab_size, tok.vocab_size - base.tokenizer.vocab_size
    old = base.model.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor[: old[name].shape[0]], old[name]), name  # RUN's, exactly
    mean = old["embed.weight"].mean(0)
    assert torch.allclose(model.embed.weight[V:], mean.expand(K, -1))
    assert torch.equal(model.decoder.weight[V:], torch.zeros(K, 24))
    assert torch.equal(model.decoder.bias[V:], model.decoder.bias[V].expand(K))
    # read as set-up reads the new text (16 streams from a zero state), the new tokens are
    # at their likeliest exactly TOLERANCE / (MARGIN K)
    known = torch.as_tensor(tok.encode(NEW), dtype=torch.long)
    known = torch.cat([torch.zeros(1, dtype=torch.long), known[known < V]])
    rows = known[: len(known) // 16 * 16].view(16, -1)
    with torch.no_grad():
        p_new = model(rows)[0].double().softmax(-1)[..., V:]
    most = finetune.TOLERANCE / (finetune.MARGIN * K)
    assert p_new.max().item() == pytest.approx(most, rel=1e-3)


@pytest.mark.parametrize("cell, tie", [("gru", True), ("noaf", False)])
def test_a_new_word_starts_as_likely_as_the_new_text_has_it(tmp_path, cell, tie):
    base = base_run(tmp_path, cell, "word", tie)
    model, tok = grown_model(base)
    V = base.tokenizer.vocab_size
    ids = np.concatenate([[0], tok.encode(NEW)])
    freq = np.bincount(ids, minlength=tok.vocab_size)[V:] / len(ids)
    known = torch.as_tensor(ids[ids < V], dtype=torch.long)  # as set-up reads the new text
    rows = known[: len(known) // 16 * 16].view(16, -1)
    with torch.no_grad():
        logits = model(rows)[0].double()
    # the new rows' logits above the old ones' log-normaliser, averaged over the text
    gap = logits[..., V:] - logits[..., :V].logsumexp(-1, keepdim=True)
    mean_p = gap.exp().mean((0, 1)).numpy()
    assert np.allclose(mean_p, np.maximum(freq, 1 / len(ids)), rtol=1e-4)
    before, after = log_probs(base.model, rows, V), log_probs(model, rows, V)
    share = (1 - after.exp().sum(-1)).mean().item()  # the new words' mass
    assert 0.5 * freq.sum() < share < 2 * freq.sum()
    assert (after - before).max() <= 1e-5  # old words only lose what the new ones take


def test_one_step_on_text_with_a_new_token_raises_its_probability(tmp_path):
    base = base_run(tmp_path, scale=1.0)
    model, tok = grown_model(base)
    model.train()
    ids = torch.as_tensor(np.concatenate([[0], tok.encode(NEW)]), dtype=torch.long)[None]
    x, y = ids[:, :-1], ids[:, 1:]
    new = y >= base.tokenizer.vocab_size  # where a new character comes next

    def p_new() -> torch.Tensor:
        with torch.no_grad():
            logits, _ = model(x)
        return logits.softmax(-1).gather(-1, y[..., None])[..., 0][new]

    before = p_new()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    logits, _ = model(x)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
    assert model.decoder.bias.grad[base.tokenizer.vocab_size :].abs().min() > 0  # it reaches
    optimizer.step()
    assert (p_new() > before).all()


def test_without_new_tokens_the_model_is_runs_and_the_vocabulary_its_own(tmp_path):
    base = base_run(tmp_path)
    model, tok = grown_model(base, TEXT)
    assert tok.symbols == base.tokenizer.symbols
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, base.model.state_dict()[name]), name
