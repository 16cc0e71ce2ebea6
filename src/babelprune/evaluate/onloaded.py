"""Scoring a causal LM whose weights stay on the CPU, one block at a time on the device (`eval --onload sequential`).

For a model larger than the accelerator's memory. The windows are cut into
padded batches as `score_windows` cuts them; the embeddings run where their
weights are (the CPU) and the inputs of block 0 of every batch are kept in
CPU memory. Then each block in turn is copied to the device, run over every
batch (each moved in, and its output moved back, one at a time) and
dropped, so the device holds one block and one batch of hidden states. The
final norm and the LM head go to the device last, and the head runs a chunk
of rows at a time as in `lm.hidden_nll`. On the CPU nothing moves: the same
code runs there, which is how the tests check it against `score_windows`.

Windows are right-padded and attention is causal, so a real token never
attends to the padding after it: the blocks run without a padding mask, and
the padded positions' outputs are never scored.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import PreTrainedModel

from babelprune.errors import BabelpruneError
from babelprune.evaluate.lm import NLLTotals, hidden_token_nll, length_batches, pad_batch, window_totals
from babelprune.evaluate.windows import Window
from babelprune.models.adapters import ArchAdapter, adapter_for
from babelprune.models.blockwise import DeviceCopies, capture_block_inputs, run_block


def check_onloadable(model: PreTrainedModel) -> ArchAdapter:
    """The model's adapter, when its body is embeddings, blocks and one final norm; otherwise one sentence."""
    adapter = adapter_for(model)
    base = adapter.base_model(model)
    # OPT's optional projections sit around the blocks, outside what is run here.
    extra = [name for name in ("project_in", "project_out") if getattr(base, name, None) is not None]
    if not adapter.decoder or adapter.get_final_norm(model) is None or extra:
        raise BabelpruneError(
            f"--onload sequential scores decoders whose body is embeddings, blocks and a final norm, and "
            f"{model.config.model_type} is not one; drop --onload (the whole model goes to --device).")
    return adapter


@torch.inference_mode()
def score_windows_onloaded(
    model: PreTrainedModel,
    windows: list[Window],
    pad_id: int,
    device: torch.device | str,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> NLLTotals:
    """NLL of every window, as `lm.score_windows`, with only one block of the model on `device` at a time."""
    adapter = check_onloadable(model)
    device = torch.device(device)
    batches = length_batches(windows, batch_size)
    cpu = torch.device("cpu")
    padded = [pad_batch([windows[i] for i in rows], pad_id, cpu) for rows in batches]  # (ids, mask), each (B, T)
    # The inputs of block 0 for each batch, and the arguments every block receives, all in CPU memory.
    inputs = [capture_block_inputs(model, adapter, ids) for ids, _ in padded]
    for index, block in enumerate(adapter.get_blocks(model)):
        copies = DeviceCopies(block, device)
        try:
            for batch in inputs:  # each batch moved in, its output moved back to CPU memory
                batch.hidden = run_block(block, adapter, batch, index, device).to(batch.hidden.device)
        finally:
            copies.put_back()
    per_target: list[list[float]] = [[] for _ in windows]
    tail = [adapter.get_final_norm(model), model.get_output_embeddings()]
    copies = [DeviceCopies(module, device) for module in tail]
    try:
        for rows, (ids, mask), batch in zip(batches, padded, inputs):
            hidden = tail[0](batch.hidden.to(device))  # (B, T, H): the final norm
            for row, nll in zip(rows, hidden_token_nll(model, hidden, ids.to(device), mask.to(device)).tolist()):
                per_target[row] = nll[: windows[row].n_targets]
            if on_batch is not None:
                on_batch(len(rows))
    finally:
        for copy in copies:
            copy.put_back()
    return window_totals(windows, per_target)

