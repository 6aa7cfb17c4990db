from contextlib import contextmanager

import pytest
import torch

from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.sample import (
    SampleConfig,
    Sampler,
    filter_logits,
    generate,
    generate_ids,
    sample_text,
)

from .reference_sample import reference_generate


def model(seed=0):
    torch.manual_seed(seed)
    return RNNLanguageModel(ModelConfig(vocab_size=13, layers=1, hidden=16, embedding=8))


def run(m, config, seed=None, prime=(3, 4)):
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.stack([ids for ids, _ in generate(m, list(prime), config, 0, g)], dim=1)


def test_same_seed_same_text_and_another_seed_other_text():
    m = model()
    config = SampleConfig(length=40, num_samples=3, stop_at_eos=False)
    assert torch.equal(run(m, config, 7), run(m, config, 7))
    assert not torch.equal(run(m, config, 7), run(m, config, 8))


def test_temperature_zero_is_argmax_of_the_model_step_by_step():
    m = model().eval()
    out = run(m, SampleConfig(length=10, temperature=0, stop_at_eos=False))[0].tolist()
    ids = [3, 4]
    for token in out:
        logits, _ = m(torch.tensor([ids]))
        assert token == logits[0, -1].argmax().item()
        ids.append(token)


def test_batched_samples_equal_one_at_a_time_when_greedy():
    m = model()
    config = SampleConfig(length=12, temperature=0, num_samples=4, stop_at_eos=False)
    batch = run(m, config)
    one = run(m, SampleConfig(length=12, temperature=0, stop_at_eos=False))
    assert all(torch.equal(row, one[0]) for row in batch)


def test_top_k_keeps_only_the_k_likeliest():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert torch.isinf(filter_logits(logits, 2, None)).tolist() == [[True, False, True, False]]


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = ~torch.isinf(filter_logits(probs.log(), None, 0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7 <= 0.8
    kept = ~torch.isinf(filter_logits(probs.log(), None, 0.01))
    assert kept.tolist() == [[True, False, False, False]]  # the likeliest always stays


def test_a_sample_stops_at_eos():
    m = model()
    with torch.no_grad():
        m.decoder.bias.fill_(-100.0)
        m.decoder.bias[0] = 100.0  # the model always says <eos>
    steps = list(generate(m, [3], SampleConfig(length=50, num_samples=2), 0))
    assert len(steps) == 1 and steps[0][0].tolist() == [0, 0]


# The device path (Sampler, generate_ids) against the plain reference ----------------------

CONFIGS = [
    SampleConfig(length=60, num_samples=4),  # <eos> ends samples at different steps
    SampleConfig(length=60, num_samples=3, temperature=0.7, top_k=4, stop_at_eos=False),
    SampleConfig(length=60, num_samples=2, top_p=0.8, stop_at_eos=False),
    SampleConfig(length=30, num_samples=2, temperature=0),
]


@contextmanager
def native_rnn_kernels():
    """oneDNN's LSTM (the CPU default for sequences) rounds differently in the last bit
    from the native kernels that the one-step cells use: off, for a bitwise match."""
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = enabled


def reference(m, config, seed, prime=(3, 4)):
    """The plain sampler's tokens [B, N], with <eos> where a sample had already ended."""
    with native_rnn_kernels():
        g = torch.Generator().manual_seed(seed)
        steps = list(reference_generate(m, list(prime), config, 0, g))
    return torch.stack([torch.where(alive, ids, 0) for ids, alive in steps], dim=1)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("config", CONFIGS)
def test_device_sampler_equals_the_reference_token_for_token(cell, config):
    torch.manual_seed(1)
    m = RNNLanguageModel(ModelConfig(13, cell=cell, layers=2, hidden=16, embedding=8))
    expected = reference(m, config, seed=5)
    ids = generate_ids(m, [3, 4], config, 0, torch.Generator().manual_seed(5))
    n = expected.shape[1]
    assert torch.equal(ids[:, :n], expected)
    assert (ids[:, n:] == 0).all()  # after every sample ended: <eos> padding only
    streamed = run(m, config, seed=5)  # generate(): the same sampler, one step at a time
    assert torch.equal(streamed, expected)


def test_model_step_equals_forward_for_one_token():
    torch.manual_seed(0)
    for cell in ("lstm", "gru", "rnn"):
        m = RNNLanguageModel(ModelConfig(13, cell=cell, layers=2, hidden=16, embedding=8))
        state = tuple(torch.randn_like(s) for s in m.initial_state(3))
        ids = torch.tensor([1, 5, 7])
        with torch.inference_mode():
            logits, new = m(ids[:, None], state)
            step_logits, step_state = m.eval().step(ids, tuple(s.clone() for s in state))
        torch.testing.assert_close(step_logits, logits[:, 0])
        for a, b in zip(step_state, new):
            torch.testing.assert_close(a, b)


def test_sample_text_drops_eos_and_keeps_the_reference_text():
    from charrnn.tokenizers import CharTokenizer

    tok = CharTokenizer.fit("abcdefghijkl")  # 13 ids, <eos> is 0
    m = model()
    config = SampleConfig(length=40, num_samples=3)
    texts = sample_text(m, tok, "cd", config, torch.Generator().manual_seed(2))
    expected = reference(m, config, seed=2, prime=tok.encode("cd").tolist())
    assert texts == [tok.decode([i for i in row if i != 0]) for row in expected.tolist()]


def test_cuda_graphs_are_refused_on_a_cpu():
    with pytest.raises(AssertionError, match="CUDA"):
        Sampler(model(), SampleConfig(), 0, graph=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replay_equals_the_graph_free_path():
    torch.manual_seed(1)
    m = RNNLanguageModel(ModelConfig(13, layers=2, hidden=64, embedding=8)).cuda()
    for config in CONFIGS:
        runs = [
            generate_ids(m, [3, 4], config, 0, torch.Generator("cuda").manual_seed(5), graph)
            for graph in (False, True)
        ]
        assert torch.equal(*runs)
