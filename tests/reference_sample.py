"""generate() written plainly, the oracle the fast sampler is tested against: the model's
forward() on every token, torch.multinomial, and nothing kept on the device."""

from collections.abc import Iterator

import torch
from torch import Tensor

from charrnn.model import RNNLanguageModel
from charrnn.sample import SampleConfig, next_token, run_to_eos


@torch.inference_mode()
def reference_generate(
    model: RNNLanguageModel,
    prime: list[int],
    config: SampleConfig,
    eos_id: int,
    generator: torch.Generator | None = None,
    burn_in: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """generate(), written plainly: the model's forward() on every token and
    torch.multinomial. The fast path is tested against it."""
    model.eval()
    device = model.decoder.weight.device
    B = config.num_samples
    prime_ids = torch.tensor([prime or [eos_id]], device=device).expand(B, -1)  # [B, P]
    logits, state = model(prime_ids)
    logits = logits[:, -1]  # [B, V]: what follows the prime

    def step(ids, state):  # [B] -> (logits [B, V], state)
        logits, state = model(ids[:, None], state)
        return logits[:, -1], state

    if burn_in:
        logits, state = run_to_eos(step, logits, state, config, eos_id, generator, burn_in)
    alive = torch.ones(B, dtype=torch.bool, device=device)
    for _ in range(config.length):
        ids = next_token(logits, config, generator)  # [B]
        yield ids, alive
        if config.stop_at_eos:
            alive = alive & (ids != eos_id)
            if not alive.any():
                return
        logits, state = step(ids, state)
