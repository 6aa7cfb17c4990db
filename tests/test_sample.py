import torch

from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.sample import SampleConfig, filter_logits, generate


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
