"""The resolver: recipe -> plan (ranks, groups, placement, memory), a pure function.

Every check that can fail before a job waits in a queue lives here; each raises `LwzError` with
the key and the numbers. Rank order follows Megatron's default "tp-cp-dp-pp" (TP fastest).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass, field

from lwz.errors import LwzError
from lwz.plan.memory import (DTYPE_BYTES, GIB, ActorMemory, EngineMemory, ScorerMemory, actor_memory, engine_memory,
                             scorer_memory)
from lwz.plan.phases import (CPU_KV_CACHE_GIB, CUDA_CONTEXT, NCCL_COMMUNICATOR, PROCESS_HOST, GpuCard, HostMemory,
                             actor_communicators, gpu_phases, host_memory)
from lwz.plan.stages import check_stage_settings, pretrain_batches, reward_model_batches
from lwz.recipe.schema import ArchCfg, Recipe

_ARCH_REQUIRED = ("num_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                  "intermediate_size", "vocab_size", "max_position_embeddings")
# The collective timeout when the recipe sets none: the update, save and sync of the largest recipes, plus
# the longest response at a floor decoding rate (ranks whose engines finish early wait in a collective).
TIMEOUT_BASE_S = 1800
FLOOR_DECODE_TOKENS_PER_S = 5


@dataclass(frozen=True)
class ActorCoords:
    """A rank's place in the actor's TP x CP x DP x PP grid."""

    tp: int
    cp: int
    dp: int
    pp: int


@dataclass(frozen=True)
class EngineGroup:
    """Inference engines of one kind (rollout or a reward model)."""

    name: str
    tp: int
    ranks: list[list[int]]
    memory: EngineMemory
    key: str  # the recipe section that sets it up
    colocated: bool = True  # on the actor's GPUs (asleep outside its phase), else on GPUs of its own

    @property
    def count(self) -> int:
        return len(self.ranks)


@dataclass(frozen=True)
class Plan:
    """Everything about where a run's processes go and what they hold."""

    device: str
    nodes: int
    gpus_per_node: int
    world_size: int
    tp: int
    pp: int
    cp: int
    dp: int
    actor_ranks: list[int]
    coords: dict[int, ActorCoords]
    groups: dict[str, list[list[int]]]
    engines: list[EngineGroup]
    actor_memory: list[ActorMemory]
    phase_peak: dict[str, int]   # per actor GPU by phase (context and NCCL included); "<engine> GPUs": all phases
    card: GpuCard
    host: HostMemory             # the fullest node
    sequences_per_step: int
    sequences_per_dp_rank: int
    collective_timeout_s: int
    # reward term -> its reward model's memory per pipeline stage, scored on the actor's grid (empty: the
    # architecture is not known yet, a CPU asset not built)
    reward_models: dict[str, list[ScorerMemory]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def actor_world(self) -> int:
        return len(self.actor_ranks)

    def role(self, rank: int) -> str:
        """What a global rank runs: "actor" (the actor shard and the colocated engines) or the name of the
        engine group whose GPUs of its own it is part of."""
        if rank in self.coords:
            return "actor"
        return next(g.name for g in self.engines if not g.colocated and any(rank in r for r in g.ranks))

    def separate_engine_ranks(self, name: str) -> list[int]:
        """The global ranks of an engine group on GPUs of its own (empty when colocated or absent)."""
        group = self.engine(name)
        return [] if group is None or group.colocated else [rank for ranks in group.ranks for rank in ranks]

    def engine(self, name: str) -> EngineGroup | None:
        """The engine group called `name`, if the plan has one."""
        return next((e for e in self.engines if e.name == name), None)

    def node_of(self, rank: int) -> tuple[int, int]:
        """(node, local rank) of a global rank."""
        return divmod(rank, self.gpus_per_node)


def resolve(recipe: Recipe) -> Plan:
    """The plan of `recipe`; raises LwzError for anything that cannot run."""
    cluster, actor, rollout = recipe.cluster, recipe.actor, recipe.rollout
    arch = _complete_arch(recipe.model.arch, "model.arch", recipe.model.path)
    gpu = cluster.device == "gpu"
    check_stage_settings(recipe)
    reward_model = recipe.stage == "reward_model"
    _check_supported(recipe)
    _check_replay(recipe)
    _check_time(cluster.time)
    world = cluster.nodes * cluster.gpus_per_node
    rm_terms = [(i, t) for i, t in enumerate(recipe.rewards.terms) if t.name == "writing_rm"]

    separate = 0 if rollout.colocate or rollout.replay else _separate_engines(recipe) * rollout.tp
    actor_world = world - separate  # the actor's ranks come first, engines on GPUs of their own after them
    if actor_world < 1:
        raise LwzError(None, "rollout.engines", f"{_separate_engines(recipe)} engines of tp {rollout.tp} take "
                       f"{separate} of the {world} GPUs and leave none for the actor")
    model_parallel = actor.tp * actor.pp * actor.cp
    if actor_world % model_parallel:
        raise LwzError(None, "actor", f"world size {actor_world} is not divisible by tp x pp x cp = "
                       f"{actor.tp} x {actor.pp} x {actor.cp} = {model_parallel}")
    dp = actor_world // model_parallel
    _check_actor_shapes(arch, recipe)
    scorers: dict[str, list[ScorerMemory]] = {}
    if reward_model:  # a scalar-head model trained on pairs: no engines
        sequences, per_dp = reward_model_batches(recipe, arch, dp)
        engines = []
    elif recipe.stage == "pretrain":  # next-token training on packed rows: no engines
        sequences, per_dp = pretrain_batches(recipe, arch, dp)
        engines = []
    else:
        sequences, per_dp = _check_batches(recipe, dp)
        _check_context(arch, recipe)
        _check_eval(recipe)
        engines = [] if rollout.replay else [_rollout_engines(recipe, arch, actor_world, world)]
        scorers = {term.name: _reward_model(recipe, term.params, f"rewards.terms.{i}.params", gpu)
                   for i, term in rm_terms}

    coords = {rank: _coords(rank, actor.tp, actor.cp, dp) for rank in range(actor_world)}
    stages = actor_memory(arch, dtype=recipe.model.dtype, tp=actor.tp, pp=actor.pp, dp=dp, cp=actor.cp,
                          distributed_optimizer=actor.distributed_optimizer, recompute=actor.recompute,
                          sequence_parallel=actor.sequence_parallel,
                          micro_batch_tokens=actor.micro_batch_tokens,
                          vocab_chunk_tokens=actor.micro_batch_tokens if recipe.stage == "pretrain"  # whole logits
                          else actor.vocab_chunk_tokens,
                          reference=recipe.algo.kl_coef > 0, scalar_head=reward_model, local_spec=not gpu)
    rollout_tp = recipe.rollout.tp if engines else 1
    card = GpuCard(int(cluster.gpu_memory_gib * GIB), actor_communicators(
        actor_world, actor.tp, actor.pp, dp, rollout_tp, colocated=not engines or recipe.rollout.colocate))
    peaks = _phase_peaks(recipe, arch, stages, engines, scorers, card)
    host = _host_memory(recipe, coords, stages, engines, scorers, sequences)
    warnings = _warnings(recipe, engines, host)
    if gpu:
        _check_memory(recipe, engines, peaks, card, host)
    return Plan(device=cluster.device, nodes=cluster.nodes, gpus_per_node=cluster.gpus_per_node,
                world_size=world, tp=actor.tp, pp=actor.pp, cp=actor.cp, dp=dp,
                actor_ranks=list(range(actor_world)), coords=coords,
                groups=_groups(coords), engines=engines, actor_memory=stages, phase_peak=peaks, card=card,
                host=host, sequences_per_step=sequences, sequences_per_dp_rank=per_dp,
                collective_timeout_s=_collective_timeout(recipe), reward_models=scorers, warnings=warnings)


def _collective_timeout(recipe: Recipe) -> int:
    """The recipe's `cluster.collective_timeout_s`, else TIMEOUT_BASE_S plus the longest sequence a grpo
    run generates at FLOOR_DECODE_TOKENS_PER_S."""
    if recipe.cluster.collective_timeout_s is not None:
        return recipe.cluster.collective_timeout_s
    if recipe.stage != "grpo":
        return TIMEOUT_BASE_S
    longest = recipe.rollout.max_prompt_tokens + recipe.rollout.max_tokens
    return TIMEOUT_BASE_S + math.ceil(longest / FLOOR_DECODE_TOKENS_PER_S)


def _complete_arch(arch: ArchCfg, key: str, model_path: str) -> ArchCfg:
    for name in _ARCH_REQUIRED:
        if getattr(arch, name) is None:
            raise LwzError(None, f"{key}.{name}", f"unknown: set it in the recipe or point the model path "
                           f"({model_path}) at a local HF folder with config.json")
    return arch


# SLURM's --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (or unlimited).
_SLURM_TIME = re.compile(r"(\d+|\d+:[0-5]?\d|\d+:[0-5]?\d:[0-5]?\d|\d+-\d+|\d+-\d+:[0-5]?\d|\d+-\d+:[0-5]?\d:[0-5]?\d)")


def _check_time(time: str) -> None:
    if not (_SLURM_TIME.fullmatch(time.strip()) or time.strip().upper() in ("INFINITE", "UNLIMITED")):
        raise LwzError(None, "cluster.time", f"{time!r} is not a SLURM time limit (allowed: MM, MM:SS, HH:MM:SS, "
                       "D-HH, D-HH:MM, D-HH:MM:SS)")


def cpu_kv_cache(recipe: Recipe) -> int:
    """Bytes of a CPU engine's KV cache (rollout.cpu_kv_cache_gib, null: lwz's default)."""
    gib = recipe.rollout.cpu_kv_cache_gib
    return int((CPU_KV_CACHE_GIB if gib is None else gib) * GIB)


def _check_supported(recipe: Recipe) -> None:
    """Settings the schema knows but the runtime does not do yet: rejected here, not inside the job."""
    options = [("model.dtype", recipe.model.dtype == "fp16",
                "fp16 is not supported yet (the actor has no loss scaling); use bf16 or fp32"),
               ("actor.cp", recipe.actor.cp > 1, "context parallelism is not supported yet (the actor's SDPA "
                "attention does not split sequences over CP ranks); use actor.cp=1 and raise actor.tp/pp"),
               ]
    r = recipe.rollout
    options.append(("rollout.cpu_kv_cache_gib", recipe.cluster.device == "gpu" and r.cpu_kv_cache_gib is not None,
                    "applies on CPU only (on a GPU the KV cache is what rollout.gpu_memory_utilization leaves); "
                    "leave it null"))
    pooled = r.mode in ("partial", "async")
    for key, value in (("over_sample", r.over_sample), ("max_staleness", r.max_staleness)):
        options.append((f"rollout.{key}", not pooled and value is not None,
                        "applies to the partial and async rollouts only; set rollout.mode=partial or async "
                        "(or leave it null)"))
    options.append(("rollout.max_staleness", r.mode == "async" and r.max_staleness is not None and r.max_staleness < 1,
                    "async needs at least 1 (the engines run max_staleness - 1 batches ahead)"))
    options.append(("rollout.stale_tokens", r.mode == "sync" and r.stale_tokens not in (None, "mask"),
                    "applies to the partial, one-step-off and async rollouts only (or leave it at mask)"))
    options.append(("rollout.stale_tokens", r.mode in ("one_step_off", "async") and r.stale_tokens == "mask",
                    f"{r.mode} samples every token at least one update behind: mask would leave none in the loss; "
                    "set rollout.stale_tokens=recompute (with a rollout correction) or importance, or leave it null"))
    options.append(("algo.rollout_correction", r.stale_tokens == "recompute" and recipe.algo.rollout_correction == "none",
                    "stale_tokens=recompute leaves the gap to the sampling policy to the correction: set it to tis, "
                    "icepop, seq_tis or seq_mask_tis (or leave it null: tis)"))
    options.append(("rollout.mode", r.mode in ("one_step_off", "async") and r.colocate,
                    f"{r.mode} overlaps the next steps' generation with the update, which needs the rollout "
                    "engines on GPUs of their own: set rollout.colocate=false and rollout.engines"))
    options.append(("rollout.mode", r.mode == "partial" and not r.colocate,
                    "the partial rollout on engines of their own is not supported yet; use rollout.colocate=true"))
    options.append(("rollout.only", r.only and bool(r.replay), "a replayed run trains on saved batches: it cannot "
                    "also be rollout-only (leave one of rollout.only and rollout.replay)"))
    options.append(("schedule.eval_every", recipe.schedule.eval_every > 0 and bool(r.replay),
                    "evaluation generates on the rollout engines, which a replayed run has none of; set it to 0"))
    options.append(("schedule.eval_every", recipe.schedule.eval_every > 0 and not r.colocate,
                    "evaluation during training on engines of their own is not supported yet; set it to 0 "
                    "and run lwz eval on the checkpoints"))
    options.append(("algo.dynamic_sampling", recipe.algo.dynamic_sampling and r.mode != "partial",
                    "needs rollout.mode=partial (the extra rounds draw from its prompt stream and pool)"))
    options.append(("algo.max_sampling_rounds",
                    not recipe.algo.dynamic_sampling and recipe.algo.max_sampling_rounds != 2,
                    "applies to dynamic sampling only; set algo.dynamic_sampling=true (or leave it at 2)"))
    for key, used, why in options:
        if used:
            raise LwzError(None, key, why)


def _check_replay(recipe: Recipe) -> None:
    """rollout.replay names a run folder with a saved batch for every step."""
    from lwz.rollout.replay import saved_rollout

    run = recipe.rollout.replay
    if not run:
        return
    missing = next((s for s in range(1, recipe.schedule.steps + 1) if not saved_rollout(run, s).is_file()), None)
    if missing is not None:
        raise LwzError(None, "rollout.replay", f"{run} has no saved batch of step {missing} "
                       f"({saved_rollout(run, missing)}; a run keeps them with logging.save_rollouts=true)")


def _separate_engines(recipe: Recipe) -> int:
    """How many rollout engines run on GPUs of their own (rollout.colocate=false): rollout.engines."""
    if recipe.rollout.engines is None:
        raise LwzError(None, "rollout.engines", "with rollout.colocate=false say how many engines (each on "
                       "rollout.tp GPUs of its own, after the actor's)")
    return recipe.rollout.engines


def _check_grid(arch: ArchCfg, tp: int, pp: int, whose: str = "", why: str = "") -> None:
    """actor.tp must divide the heads, KV heads and MLP of `arch` (the actor's, or `whose`), actor.pp its layers."""
    for key, size, what, value in (("actor.tp", tp, "num_attention_heads", arch.num_attention_heads),
                                   ("actor.tp", tp, "num_key_value_heads", arch.num_key_value_heads),
                                   ("actor.tp", tp, "intermediate_size", arch.intermediate_size),
                                   ("actor.pp", pp, "num_layers", arch.num_layers)):
        if value % size:
            raise LwzError(None, key, f"{size} does not divide {whose}{what}={value} "
                           f"(allowed: {', '.join(map(str, _divisors(value)))}{why})")


def _check_actor_shapes(arch: ArchCfg, recipe: Recipe) -> None:
    tp = recipe.actor.tp
    _check_grid(arch, tp, recipe.actor.pp)
    if recipe.actor.sequence_parallel and tp == 1:
        raise LwzError(None, "actor.sequence_parallel", "needs actor.tp > 1")
    rtp = recipe.rollout.tp
    if arch.num_attention_heads % rtp or (arch.num_key_value_heads % rtp and rtp % arch.num_key_value_heads):
        raise LwzError(None, "rollout.tp", f"{rtp} must divide num_attention_heads={arch.num_attention_heads} "
                       f"and divide or be a multiple of num_key_value_heads={arch.num_key_value_heads}")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def batch_unit(group_size: int, mini_batches: int, dp: int) -> int:
    """The fewest prompt groups a batch can grow by (the partial rollout's joined groups) and still split into
    `mini_batches` mini-batches of sequences that divide across `dp` data-parallel ranks."""
    return next(g for g in itertools.count(mini_batches, mini_batches) if (g // mini_batches * group_size) % dp == 0)


def _check_batches(recipe: Recipe, dp: int) -> tuple[int, int]:
    sequences = recipe.schedule.prompts_per_step * recipe.rollout.group_size
    mini = recipe.algo.mini_batches
    what = (f"schedule.prompts_per_step x rollout.group_size = {recipe.schedule.prompts_per_step} x "
            f"{recipe.rollout.group_size} = {sequences} sequences")
    if sequences % mini:
        raise LwzError(None, "algo.mini_batches", f"{what} do not split into {mini} mini-batches")
    if (sequences // mini) % dp:
        raise LwzError(None, "schedule.prompts_per_step", f"{what} in {mini} mini-batch(es) of "
                       f"{sequences // mini} do not divide across data-parallel size {dp}")
    longest = recipe.rollout.max_prompt_tokens + recipe.rollout.max_tokens
    if recipe.actor.micro_batch_tokens < longest:
        raise LwzError(None, "actor.micro_batch_tokens", f"{recipe.actor.micro_batch_tokens} is smaller than one "
                       f"sequence (rollout.max_prompt_tokens + rollout.max_tokens = {longest})")
    return sequences, sequences // mini // dp


def _check_context(arch: ArchCfg, recipe: Recipe) -> None:
    longest = recipe.rollout.max_prompt_tokens + recipe.rollout.max_tokens
    if longest > arch.max_position_embeddings:
        raise LwzError(None, "rollout.max_tokens", f"rollout.max_prompt_tokens + rollout.max_tokens = "
                       f"{recipe.rollout.max_prompt_tokens} + {recipe.rollout.max_tokens} = {longest} exceeds the "
                       f"model's context of {arch.max_position_embeddings} tokens")


def _check_eval(recipe: Recipe) -> None:
    answer = recipe.eval.max_tokens
    if recipe.schedule.eval_every and answer is not None and answer > recipe.rollout.max_tokens:
        raise LwzError(None, "eval.max_tokens", f"{answer} exceeds rollout.max_tokens = {recipe.rollout.max_tokens} "
                       "(evaluation runs on the rollout engine, whose context is sized for rollouts)")


def _coords(rank: int, tp: int, cp: int, dp: int) -> ActorCoords:
    rest, t = divmod(rank, tp)
    rest, c = divmod(rest, cp)
    p, d = divmod(rest, dp)
    return ActorCoords(tp=t, cp=c, dp=d, pp=p)


def _groups(coords: dict[int, ActorCoords]) -> dict[str, list[list[int]]]:
    """Process groups: ranks that differ only in one coordinate (model-parallel: in tp, cp, pp)."""
    fields = [f.name for f in dataclasses.fields(ActorCoords)]
    groups: dict[str, list[list[int]]] = {}
    for name, varying in [(f, (f,)) for f in fields] + [("mp", ("tp", "cp", "pp"))]:
        buckets: dict[tuple, list[int]] = {}
        for rank, c in sorted(coords.items()):
            key = tuple(getattr(c, f) for f in fields if f not in varying)
            buckets.setdefault(key, []).append(rank)
        groups[name] = sorted(buckets.values())
    return groups


def _engine_budget(fraction: float, recipe: Recipe) -> int | None:
    """What vLLM may take on one GPU (a fraction of what CUDA shows of the card); None on CPU (the engine
    takes its weights and VLLM_CPU_KVCACHE_SPACE)."""
    card = GpuCard(int(recipe.cluster.gpu_memory_gib * GIB), 0)
    return int(fraction * card.usable) if recipe.cluster.device == "gpu" else None


def _colocated_ranks(key: str, tp: int, engines: int | None, actor_world: int) -> list[list[int]]:
    """Engines of `tp` consecutive ranks tiling the actor's GPUs."""
    if actor_world % tp:
        raise LwzError(None, f"{key}.tp", f"{tp} does not divide the {actor_world} actor GPUs the colocated "
                       "engines share")
    count = actor_world // tp
    if engines is not None and engines != count:
        raise LwzError(None, f"{key}.engines", f"{engines} colocated engines of tp {tp} need {engines * tp} GPUs, "
                       f"the actor has {actor_world} (use {count} or null)")
    return [list(range(i * tp, (i + 1) * tp)) for i in range(count)]


def _separate_ranks(key: str, tp: int, engines: int, first: int, gpus_per_node: int) -> list[list[int]]:
    """Engines of `tp` consecutive ranks from `first` on, each within one node."""
    ranks = [list(range(first + i * tp, first + (i + 1) * tp)) for i in range(engines)]
    for r in ranks:
        if r[0] // gpus_per_node != r[-1] // gpus_per_node:
            raise LwzError(None, f"{key}.tp", f"an engine on ranks {r[0]}-{r[-1]} spans two nodes ({gpus_per_node} "
                           "GPUs per node): make the actor's GPUs a multiple of the engine tp")
    return ranks


def _rollout_engines(recipe: Recipe, arch: ArchCfg, actor_world: int, world: int) -> EngineGroup:
    rollout = recipe.rollout
    if rollout.colocate:
        ranks = _colocated_ranks("rollout", rollout.tp, rollout.engines, actor_world)
    else:
        ranks = _separate_ranks("rollout", rollout.tp, rollout.engines, actor_world, recipe.cluster.gpus_per_node)
    memory = engine_memory(arch, dtype=recipe.model.dtype, tp=rollout.tp, sequences=rollout.group_size,
                           tokens_per_sequence=rollout.max_prompt_tokens + rollout.max_tokens,
                           budget=_engine_budget(rollout.gpu_memory_utilization, recipe))
    return EngineGroup("rollout", rollout.tp, ranks, memory, "rollout", colocated=rollout.colocate)


def _reward_model(recipe: Recipe, params: dict, key: str, gpu: bool) -> list[ScorerMemory]:
    """A reward model scored on the actor's grid: its shapes must split like the actor's; its memory per stage
    (none when its architecture is unknown on CPU, before a local asset is built)."""
    arch = ArchCfg(**params["arch"])
    known = all(getattr(arch, name) is not None for name in _ARCH_REQUIRED)
    if not (gpu or known):
        return []
    arch = _complete_arch(arch, f"{key}.arch", params["model"])
    tp, pp = recipe.actor.tp, recipe.actor.pp
    _check_grid(arch, tp, pp, "the reward model's ", f"; {key}.model is scored on the actor's tp x pp grid")
    return scorer_memory(arch, dtype=recipe.model.dtype, tp=tp, pp=pp,
                         sequence_parallel=recipe.actor.sequence_parallel,
                         micro_batch_tokens=recipe.actor.micro_batch_tokens)


def _phase_peaks(recipe: Recipe, arch: ArchCfg, stages: list[ActorMemory], engines: list[EngineGroup],
                 scorers: dict[str, list[ScorerMemory]], card: GpuCard) -> dict[str, int]:
    """Peak bytes on an actor GPU in each phase (lwz.plan.phases); an engine group on GPUs of its own is its
    own entry, "<name> GPUs" (its budget and its context and NCCL, in every phase). On CPU: per process,
    without context and NCCL."""
    gpu = recipe.cluster.device == "gpu"
    rollout = engines[0] if engines else None
    engine = (rollout.memory.budget if gpu else rollout.memory.weights + cpu_kv_cache(recipe), rollout.memory.weights,
              rollout.tp) if rollout else None  # fmt: skip
    peaks = gpu_phases(stages, arch=arch, dtype=recipe.model.dtype, tp=recipe.actor.tp,
                       overhead=card.overhead if gpu else 0, engine=engine, colocated=bool(rollout and rollout.colocated),
                       scorers=list(scorers.values()))
    if rollout and not rollout.colocated:
        communicators = 2 + (rollout.tp > 1)  # the engines' world and TP groups, the bridge's weight group
        peaks[f"{rollout.name} GPUs"] = (CUDA_CONTEXT + communicators * NCCL_COMMUNICATOR if gpu else 0) + engine[0]
    return peaks


def _host_memory(recipe: Recipe, coords: dict[int, ActorCoords], stages: list[ActorMemory],
                 engines: list[EngineGroup], scorers: dict[str, list[ScorerMemory]], sequences: int) -> HostMemory:
    """Host memory of the fullest node (lwz.plan.phases.host_memory)."""
    cluster, gpu = recipe.cluster, recipe.cluster.device == "gpu"
    per_node = cluster.gpus_per_node
    ranks_per_node = [list(range(n * per_node, (n + 1) * per_node)) for n in range(cluster.nodes)]
    rm = [max((memory[s].weights for memory in scorers.values() if memory), default=0) for s in range(len(stages))]
    rollout = engines[0] if engines else None
    resident: dict[int, int] = {}
    if not gpu:   # a CPU process holds what a GPU would, all at once (nothing sleeps)
        engine_cpu = rollout.memory.weights + cpu_kv_cache(recipe) if rollout else 0
        rm_cpu = [max((memory[s].total for memory in scorers.values() if memory), default=0) for s in range(len(stages))]
        beside = engine_cpu if rollout and rollout.colocated else 0
        resident = {r: stages[c.pp].total + rm_cpu[c.pp] + beside for r, c in coords.items()}
        if rollout and not rollout.colocated:
            resident.update({r: engine_cpu for ranks in rollout.ranks for r in ranks})
    backed_up = rollout is not None and rollout.colocated   # a level-1 sleep for every save
    if recipe.stage == "grpo":
        tokens = sequences * (recipe.rollout.max_prompt_tokens + recipe.rollout.max_tokens)
    elif recipe.stage == "reward_model":
        tokens = sequences * recipe.rm.max_length
    else:
        tokens = recipe.cpt.tokens_per_step
    return host_memory(ranks_per_node=ranks_per_node, stage_of={r: c.pp for r, c in coords.items()},
                       dp_of={r: c.dp for r, c in coords.items()}, stage_params=[s.params for s in stages],
                       weight_bytes=DTYPE_BYTES[recipe.model.dtype],
                       offloaded=rm if gpu else [0] * len(stages),
                       engine_backup=rollout.memory.weights if gpu and backed_up else 0, batch_tokens=tokens,
                       distributed_optimizer=recipe.actor.distributed_optimizer, resident=resident,
                       process=PROCESS_HOST[cluster.device])


def _check_memory(recipe: Recipe, engines: list[EngineGroup], peaks: dict[str, int], card: GpuCard,
                  host: HostMemory) -> None:
    for phase, peak in peaks.items():
        if peak > card.usable:
            raise LwzError(None, "cluster.gpu_memory_gib", f"the {phase} phase needs {_gib(peak)} per GPU, more "
                           f"than the {_gib(card.usable)} usable of a {recipe.cluster.gpu_memory_gib:g} GiB card; "
                           "raise actor.tp/pp, enable actor.recompute=full, lower actor.micro_batch_tokens or the "
                           "engines' memory fraction")
    for group in engines:
        need, budget = group.memory.total, group.memory.budget
        if group.ranks and need > budget:
            raise LwzError(None, f"{group.key}.gpu_memory_utilization", f"in the rollout phase a {group.name} engine needs {_gib(group.memory.weights)} weights + "
                           f"{_gib(group.memory.kv_cache)} KV cache = {_gib(need)} per GPU, more than its "
                           f"budget {_gib(budget)} of {_gib(card.usable)} usable; raise the fraction or the "
                           "engine's tp")
    mem_gb = recipe.cluster.mem_gb
    if mem_gb is not None and host.total > mem_gb * 1e9:
        phase = "save" if host.save else "rollout"
        parts = ", ".join(f"{name} {value / 1e9:.0f}" for name, value in host.parts().items())
        raise LwzError(None, "cluster.mem_gb", f"the {phase} phase needs {host.total / 1e9:.0f} GB of host memory on "
                       f"node {host.node} ({parts}), more than cluster.mem_gb = {mem_gb}; raise it (SLURM --mem) "
                       "or spread the data-parallel rank 0 shards over more nodes")


def _warnings(recipe: Recipe, engines: list[EngineGroup], host: HostMemory) -> list[str]:
    out = []
    if recipe.cluster.device == "gpu" and recipe.cluster.mem_gb is None:
        out.append(f"cluster.mem_gb is unset: a node needs about {host.total / 1e9:.0f} GB of host memory, "
                   "SLURM's default --mem of the partition may be less")
    per_node = recipe.cluster.gpus_per_node
    if recipe.actor.tp > per_node:
        out.append(f"actor.tp={recipe.actor.tp} spans nodes ({per_node} GPUs per node): TP across nodes is slow")
    if recipe.rollout.top_p < 1:
        out.append(f"rollout.top_p={recipe.rollout.top_p:g}: the actor's logprobs are of the whole tempered "
                   "distribution, the engine samples from its nucleus (train/inference mismatch; see rollout/kl)")
    rollout = recipe.stage == "grpo" and engines and engines[0]
    if rollout and rollout.count and recipe.schedule.prompts_per_step % rollout.count:
        out.append(f"{recipe.schedule.prompts_per_step} prompts do not spread evenly over {rollout.count} "
                   "rollout engines")
    return out


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"
