"""The calls `bench-speed` times: forward passes at batch 1 and at a batch size, and greedy generation.

Every probe is a function of no arguments over fixed, seeded token ids, so
that timing it again repeats exactly the same work:

* "latency": one sequence of `seq_len` tokens through the whole model;
* "throughput": `batch_size` such sequences at once;
* "latency_body", "throughput_body": the same without the LM head, for
  causal LMs whose head is a separate module (a large vocabulary can
  dominate the cost);
* "generate": `model.generate` at batch 1, greedy, from a prompt of
  `prompt_tokens` ids, asked for exactly `new_tokens` new tokens (the end of
  sequence token is held back until then); causal LMs only.

The timing (evaluate/speed.py) and the peak-memory child process
(evaluate/memory.py) run the same probes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for
from babelprune.models.base import LoadedModel

Probe = Callable[[], object]


def random_ids(model: nn.Module, batch: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """(batch, seq_len) token ids drawn from the vocabulary with a seeded generator (the first ids, often special, skipped)."""
    vocab = int(model.config.get_text_config().vocab_size)
    low = 4 if vocab > 8 else 0
    # Drawn on the CPU, so a seed gives the same ids on every device, then moved to where the embeddings are.
    ids = torch.randint(low, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed), device="cpu")
    return ids.to(model.get_input_embeddings().weight.device)


def has_separate_body(model: nn.Module) -> bool:
    adapter = adapter_for(model)
    return adapter.get_lm_head(model) is not None and adapter.base_model(model) is not model


def forward_probes(loaded: LoadedModel, seq_len: int, batch_size: int, seed: int = 0) -> dict[str, Probe]:
    """Calls to time: "latency" (1 sequence), "throughput" (a batch), and their "_body" twins for models with an LM head."""
    model = loaded.model
    single, batch = random_ids(model, 1, seq_len, seed), random_ids(model, batch_size, seq_len, seed + 1)
    probes = {"latency": lambda: model(single), "throughput": lambda: model(batch)}
    if has_separate_body(model):
        body = adapter_for(model).base_model(model)
        probes |= {"latency_body": lambda: body(single), "throughput_body": lambda: body(batch)}
    return probes


def can_generate(loaded: LoadedModel) -> bool:
    """Whether the model generates text: a causal LM with an LM head (encoders do not)."""
    return loaded.kind == "causal-lm" and adapter_for(loaded.model).get_lm_head(loaded.model) is not None


def generation_probe(loaded: LoadedModel, new_tokens: int, prompt_tokens: int, counts: list[int], seed: int = 0) -> Probe:
    """Greedy `generate` of `new_tokens` tokens at batch 1; each call appends how many new tokens it produced to `counts`."""
    model = loaded.model
    if min(new_tokens, prompt_tokens) < 1:
        raise BabelpruneError(f"Generation needs at least 1 prompt token and 1 new token (got {prompt_tokens} and {new_tokens}); fix the options.")
    positions = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if positions is not None and prompt_tokens + new_tokens > positions:
        raise BabelpruneError(
            f"Generating {new_tokens} tokens after a prompt of {prompt_tokens} needs {prompt_tokens + new_tokens} positions, "
            f"but {loaded.spec} has {positions}; ask for fewer new or prompt tokens."
        )
    prompt = random_ids(model, 1, prompt_tokens, seed + 2)  # (1, prompt_tokens)
    mask = torch.ones_like(prompt)
    pad = model.config.get_text_config().pad_token_id
    settings = dict(
        do_sample=False, max_new_tokens=new_tokens,
        # min_new_tokens holds the end of sequence token back, so every call does the same work.
        min_new_tokens=new_tokens, pad_token_id=pad if pad is not None else 0,
    )

    def call() -> torch.Tensor:
        output = model.generate(input_ids=prompt, attention_mask=mask, **settings)  # (1, prompt + new)
        counts.append(output.shape[1] - prompt.shape[1])
        return output

    return call


def all_probes(loaded: LoadedModel, seq_len: int, batch_size: int, new_tokens: int, prompt_tokens: int,
               counts: list[int], seed: int = 0) -> dict[str, Probe]:
    """The forward probes, plus "generate" for models that generate when `new_tokens` > 0."""
    probes = forward_probes(loaded, seq_len, batch_size, seed)
    if new_tokens > 0 and can_generate(loaded):
        probes["generate"] = generation_probe(loaded, new_tokens, prompt_tokens, counts, seed)
    return probes


def wait_for_device(device: torch.device | None = None) -> None:
    """A CUDA or MPS call returns before its kernels finish: wait for them, so the time is the work's.

    A no-op on the CPU. Without a device, CUDA is waited for once it is in use (a model may be there).
    """
    if device is not None and device.type == "mps":
        torch.mps.synchronize()
    elif (device is not None and device.type == "cuda") or (device is None and torch.cuda.is_initialized()):
        torch.cuda.synchronize(device)


def time_call(call: Probe, device: torch.device | None = None) -> float:
    """Wall seconds of one call on `device` (its output dropped before returning)."""
    started = time.perf_counter()
    output = call()
    wait_for_device(device)
    seconds = time.perf_counter() - started
    del output
    return seconds
