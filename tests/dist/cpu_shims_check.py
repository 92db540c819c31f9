"""Checks of megatron-core's CPU shims, in a fresh process (they patch torch globally).

Usage: python tests/dist/cpu_shims_check.py  (exits 0 and prints "ok" when every check holds)
"""

from __future__ import annotations

import os
import socket

import torch


def main() -> None:
    from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32, get_grad_norm_fp32
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    from lwz.runtime import apply_cpu_shims, cpu_shims_applied, init_distributed, seed_everything

    assert not cpu_shims_applied()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    runtime = init_distributed(1, 1, seed=3)
    apply_cpu_shims()  # a second call changes nothing
    assert (
        cpu_shims_applied() and runtime.device == torch.device("cpu") and runtime.backend == "gloo"
    )

    # CUDA placements land on the CPU; type strings look like CUDA ones; sync primitives are no-ops.
    assert torch.cuda.current_device() == "cpu"
    assert torch.zeros(2, device="cuda").device.type == "cpu"
    assert torch.zeros(2, device=torch.device("cuda", 0)).device.type == "cpu"
    assert torch.ones(2).cuda().device.type == "cpu"
    assert torch.ones(2).to("cuda", non_blocking=True).device.type == "cpu"
    assert torch.ones(2).to(device="cuda:0").device.type == "cpu"
    assert torch.ones(2).type() == "torch.cuda.FloatTensor"
    assert torch.ones(2, dtype=torch.bfloat16).type() == "torch.cuda.BFloat16Tensor"
    assert torch.ones(2).type(torch.float64).dtype == torch.float64
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        stream.wait_stream(torch.cuda.current_stream())
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    event.synchronize()

    # The model-parallel RNG tracker forks the CPU generator and leaves the default stream alone.
    seed_everything(3)
    first, second = torch.rand(4), torch.rand(4)
    seed_everything(3)
    assert torch.equal(torch.rand(4), first)
    with get_cuda_rng_tracker().fork():
        forked = torch.rand(4)
    assert torch.equal(torch.rand(4), second), "fork disturbed the default generator"
    assert not torch.equal(forked, second)
    seed_everything(3)
    torch.rand(4)
    with get_cuda_rng_tracker().fork():
        assert torch.equal(torch.rand(4), forked), "tracker state is not reproducible"

    # Grad clipping asserts CUDA type strings and allocates on 'cuda'.
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(4))]
    for p in params:
        p.grad = torch.full_like(p, 2.0)
    norm = get_grad_norm_fp32([p.grad for p in params])
    assert abs(norm - 2.0 * 7**0.5) < 1e-5, norm
    clip_grad_by_total_norm_fp32(params, max_norm=1.0, total_norm=norm)
    assert abs(torch.cat([p.grad for p in params]).norm().item() - 1.0) < 1e-5
    print("ok")


if __name__ == "__main__":
    main()
