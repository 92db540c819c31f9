"""Packed documents through the actor's megatron model on CPU, in a fresh process (world of one): the
logits of documents packed into one THD row (`lwz.cpt.packing`, `PackedSeqParams`) equal each document's
own logits run alone (1e-5), so attention and RoPE restart at every end-of-document token.

Usage: python tests/dist/packed_attention_check.py  (exits 0 and prints "ok" when every check holds)
"""

from __future__ import annotations

import numpy as np
import torch


def main() -> None:
    from lwz.actor.convert import load_hf_into_megatron, read_hf_config
    from lwz.actor.model import build_gpt_model
    from lwz.cpt.packing import pack_row, packed_batch
    from lwz.runtime import destroy_distributed, init_distributed
    from lwz.models_local.tiny import tiny_qwen2_path

    init_distributed(seed=0)
    path = tiny_qwen2_path()
    config = read_hf_config(path)
    model = build_gpt_model(config)
    load_hf_into_megatron(model, path, config)
    model.eval()
    eod = 16320   # <|endoftext|> of the tiny model
    g = torch.Generator().manual_seed(0)
    docs = [torch.randint(0, 16000, (n,), generator=g).tolist() for n in (5, 9, 4)]
    stream = [t for d in docs for t in d + [eod]]  # 21 tokens: one row of 20
    row = pack_row(np.array(stream), eod)
    tokens, _, loss_mask, params = packed_batch([row, row])
    with torch.no_grad():
        packed = model(tokens, None, None, packed_seq_params=params)[0, :, :config["vocab_size"]]
        start = 0
        for doc in docs:
            alone = torch.tensor([doc + [eod]])[:, : len(row.tokens) - start]
            n = alone.shape[1]
            logits = model(alone, torch.arange(n)[None], None)[0, :, :config["vocab_size"]]
            for copy in (0, len(row.tokens)):  # the row twice side by side: each copy is its own segment
                got = packed[copy + start: copy + start + n]
                assert torch.allclose(got, logits, rtol=1e-5, atol=1e-5), (start, (got - logits).abs().max())
            start += n
    assert loss_mask[0, :len(row.tokens)].tolist() == [float(t != eod) for t in stream[:-1]]
    destroy_distributed()
    print("ok")


if __name__ == "__main__":
    main()
