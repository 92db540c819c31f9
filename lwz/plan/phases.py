"""Memory by phase: the peak on an actor GPU in each phase of a step, and host memory per node.

Everything a GPU holds beyond the tensors lwz allocates is a model, named as one in the plan's text:
- the card: `cluster.gpu_memory_gib` is its size; CUDA shows USABLE_FRACTION of it (an H100 80 GB shows
  79.2 GiB), and vLLM's `gpu_memory_utilization` is a fraction of what CUDA shows;
- the CUDA context (with cuBLAS/cuDNN workspaces) of each process: CUDA_CONTEXT;
- NCCL's buffers: NCCL_COMMUNICATOR per communicator the rank uses (2 directions x 16 channels x the
  default 4 MiB NCCL_BUFFSIZE); a rank uses its world group, its non-trivial megatron groups (tp, pp, dp,
  the model-parallel group of the gradient norm), and its engine's world and TP groups (or the bridge's
  weight group on the split layout).
Phases of a colocated actor GPU, each on top of the context, NCCL and the actor's static memory
(weights, fp32 gradients, optimizer states, reference model):
  start-up  the larger of the reward model built on the GPU before it moves to the host, and the rollout
            engine's budget, which vLLM asks to find free when it is built (`request_memory`);
  rollout   the engine's budget (weights + KV cache + its activations);
  reward    the reward model's stage weights and one layer's activations;
  update    the actor's activations (lwz.plan.memory);
  sync      the engine's weights (its KV cache still asleep), the largest HF item gathered whole
            (a layer, or the embedding) and vLLM's copy of its shard while it reloads that layer;
  save      the largest actor tensor staged for writing (the optimizer's state is gathered on the host;
            the engine sleeps at level 1 for it).
Host memory per node: per process PROCESS_HOST (Python, torch, vLLM and megatron, and on a GPU the
CUDA, NCCL and cuDNN libraries: a model, per device; on CPU checked against a run's peak RSS), the reward
model's pinned copy, the colocated engine's pinned weight backup (it sleeps at level 1 for every save,
and for dynamic sampling's rounds), the step's batch (token ids and three logprobs per token), and during
a save, on each data-parallel rank 0, (2 x 12 + b) B per parameter of its stage: the distributed
optimizer's fp32 parameters and Adam states (12 B) gathered once by megatron and staged once more for
writing, and the weights staged once (b B). Measured on CPU: a save raised a tiny fp32 Qwen2's peak RSS
by 1.10 GB for 39.2 M parameters, 28.1 B each (tests/e2e/test_train_loop.py checks the plan against it).
On CPU every figure is host memory of a process: the engine's KV cache is VLLM_CPU_KVCACHE_SPACE
(1 GiB, set by lwz) and there is no context or NCCL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lwz.actor.vocab import padded_vocab_size
from lwz.plan.memory import DTYPE_BYTES, GIB, ActorMemory, ScorerMemory, layer_params
from lwz.recipe.schema import ArchCfg

__all__ = ["USABLE_FRACTION", "CUDA_CONTEXT", "NCCL_COMMUNICATOR", "PROCESS_HOST", "GpuCard", "gpu_phases",
           "HostMemory", "host_memory"]

USABLE_FRACTION = 0.99
CUDA_CONTEXT = GIB
NCCL_COMMUNICATOR = 2 * 16 * 4 * (1 << 20)
PROCESS_HOST = {"gpu": 4 * GIB, "cpu": 2 * GIB}   # by cluster.device
CPU_KV_CACHE_GIB = 1.0   # VLLM_CPU_KVCACHE_SPACE when rollout.cpu_kv_cache_gib is null (lwz.engines.vllm_engine)
SYNC_BUCKET = 256 << 20
OPTIMIZER_STATE_BYTES = 12   # fp32 parameter, Adam m and v, gathered on the host for a save
BATCH_BYTES_PER_TOKEN = 8 + 3 * 4  # token id (int64) and the engine's, old and reference logprobs (fp32)


@dataclass(frozen=True)
class GpuCard:
    """One GPU of the cluster as the plan counts it."""

    size: int          # the card (cluster.gpu_memory_gib)
    communicators: int  # NCCL communicators of an actor rank

    @property
    def usable(self) -> int:
        """What CUDA shows of the card."""
        return int(self.size * USABLE_FRACTION)

    @property
    def overhead(self) -> int:
        """The CUDA context and NCCL's buffers."""
        return CUDA_CONTEXT + self.communicators * NCCL_COMMUNICATOR


def actor_communicators(world: int, tp: int, pp: int, dp: int, rollout_tp: int, colocated: bool) -> int:
    """NCCL communicators an actor rank uses (see the module doc)."""
    megatron = 1 + sum(size > 1 for size in (tp, pp, dp, tp * pp))
    engine = (1 + (rollout_tp > 1)) if colocated else 1   # the engine's groups, else the bridge's weight group
    return megatron + (engine if world > 1 else 0)


def _largest_item(arch: ArchCfg, dtype: str) -> int:
    """Bytes of the largest HF item the sync gathers whole: one layer, or the embedding (or output layer)."""
    sharded, replicated = layer_params(arch)
    return max(sharded + replicated, arch.vocab_size * arch.hidden_size) * DTYPE_BYTES[dtype]


def gpu_phases(stages: list[ActorMemory], *, arch: ArchCfg, dtype: str, tp: int, overhead: int,
               engine: tuple[int, int, int] | None, colocated: bool, scorers: list[list[ScorerMemory]]
               ) -> dict[str, int]:
    """Peak bytes on an actor GPU in each phase, the context and NCCL included. `engine`: the rollout engine's
    (budget, weights per GPU, tp), None in a stage without rollout; `colocated`: it shares the actor's GPU."""
    static = max(s.static for s in stages)
    rm = max((m.total for memory in scorers for m in memory), default=0)
    rm_weights = max((m.weights for memory in scorers for m in memory), default=0)
    phases = {"start-up": static + rm_weights, "update": max(s.total for s in stages)}
    if engine is not None:
        budget, weights, engine_tp = engine
        item = _largest_item(arch, dtype)
        if colocated:
            phases["start-up"] = static + max(rm_weights, budget)
            phases["rollout"] = static + budget
            phases["sync"] = static + weights + item + math.ceil(item / engine_tp)
        else:   # the actor's rank 0 gathers an item and broadcasts it in buckets
            phases["sync"] = static + item + SYNC_BUCKET
    if rm:
        phases["reward"] = static + rm
    phases["save"] = static + padded_vocab_size(arch.vocab_size, tp) * arch.hidden_size // tp * DTYPE_BYTES[dtype]
    order = ("start-up", "rollout", "reward", "update", "sync", "save")
    return {phase: phases[phase] + overhead for phase in order if phase in phases}


@dataclass(frozen=True)
class HostMemory:
    """Host bytes of the fullest node, by what holds them (`models`: on CPU, what a GPU would hold)."""

    node: int
    processes: int
    models: int
    offloaded: int
    backups: int
    batches: int
    save: int

    @property
    def total(self) -> int:
        return self.processes + self.models + self.offloaded + self.backups + self.batches + self.save

    def parts(self) -> dict[str, int]:
        """The non-zero components, named as the plan prints them."""
        named = {"processes": self.processes, "models": self.models, "reward model": self.offloaded,
                 "engine backups": self.backups, "batches": self.batches, "save": self.save}
        return {name: value for name, value in named.items() if value}


def host_memory(*, ranks_per_node: list[list[int]], stage_of: dict[int, int], dp_of: dict[int, int],
                stage_params: list[int], weight_bytes: int, offloaded: list[int], engine_backup: int, batch_tokens: int,
                distributed_optimizer: bool, resident: dict[int, int], process: int) -> HostMemory:
    """The node whose host memory peaks (a save on a node of data-parallel rank 0 ranks), by component.
    `offloaded[s]`: the reward model's host copy on a rank of stage s; `resident[rank]`: what a CPU rank
    holds that a GPU would (0 on GPUs); `process`: PROCESS_HOST of the device; `weight_bytes`: the model
    dtype's bytes."""
    best: HostMemory | None = None
    for node, ranks in enumerate(ranks_per_node):
        actors = [r for r in ranks if r in stage_of]
        memory = HostMemory(
            node=node, processes=len(ranks) * process, models=sum(resident.get(r, 0) for r in ranks),
            offloaded=sum(offloaded[stage_of[r]] for r in actors), backups=len(actors) * engine_backup,
            batches=len(actors) * batch_tokens * BATCH_BYTES_PER_TOKEN,
            save=sum((2 * OPTIMIZER_STATE_BYTES + weight_bytes) * stage_params[stage_of[r]]
                     for r in actors if distributed_optimizer and dp_of[r] == 0))
        if best is None or memory.total > best.total:
            best = memory
    assert best is not None
    return best
