"""The reward model's backbone: an HF sequence classifier with one output (a scalar head).

`AutoModelForSequenceClassification(num_labels=1)` works for decoders (Qwen2: the last token's
hidden state) and encoders (BERT-like: the [CLS] token). One input encoding serves training, the
in-process scorer and the vLLM pooling scorer, so they see the same token ids:
- tokenizers with a chat template: the chat `user: prompt / assistant: answer`, tokenized whole;
- others: the tokenizer's sentence pair `[CLS] prompt [SEP] answer [SEP]` (one segment id).
Longer inputs are truncated from the left (the end of the answer is kept).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch


def load_backbone(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) of a scalar-head reward model, or of a base model given a fresh head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=dtype)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def encode(tokenizer, prompt: str, answer: str, max_length: int) -> list[int]:
    """Token ids of (prompt, answer) for the reward model, at most `max_length`, cut from the left."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}], tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"][-max_length:]
    backend = tokenizer.backend_tokenizer  # a `tokenizers.Tokenizer`: truncate, then add the specials
    backend.no_padding()  # HF sets these again on each call; here we want the raw encodings
    backend.no_truncation()
    prompt_enc = backend.encode(prompt, add_special_tokens=False)
    answer_enc = backend.encode(answer, add_special_tokens=False)
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    assert budget > 0, f"max_length {max_length} leaves no room for text"
    if len(answer_enc.ids) > budget:
        answer_enc.truncate(budget, direction="left")
    room = budget - len(answer_enc.ids)
    if room == 0:
        return backend.post_process(answer_enc, None, add_special_tokens=True).ids[-max_length:]
    if len(prompt_enc.ids) > room:
        prompt_enc.truncate(room, direction="left")
    return backend.post_process(prompt_enc, answer_enc, add_special_tokens=True).ids

def forward_scores(model, sequences: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """The scalar score of each token sequence (right-padded into one batch)."""
    device = next(model.parameters()).device
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, :len(seq)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    return logits[:, 0].float()
