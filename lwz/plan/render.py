"""The plan as text: settings that matter, the placement table, the memory table."""

from __future__ import annotations

import math

from lwz.algo.rollout_correction import Correction
from lwz.plan.memory import GIB, hf_param_count
from lwz.plan.phases import CUDA_CONTEXT, NCCL_COMMUNICATOR, PROCESS_HOST, USABLE_FRACTION
from lwz.plan.resolve import Plan, batch_unit
from lwz.recipe.schema import Recipe


def _gib(n: int) -> str:
    return f"{n / GIB:8.2f}"


def render_plan(recipe: Recipe, plan: Plan) -> str:
    """A human-readable plan (what `lwz plan` prints and the run folder keeps as plan.txt)."""
    return "\n".join(_settings(recipe, plan) + [""] + _placement(plan) + [""] + _memory(recipe, plan)) + "\n"


def _settings(recipe: Recipe, plan: Plan) -> list[str]:
    a, r, arch = recipe.actor, recipe.rollout, recipe.model.arch
    unit = "GPUs" if plan.device == "gpu" else "CPU processes"
    terms = ", ".join(f"{t.name} ({t.weight:g})" for t in recipe.rewards.terms)
    head = recipe.stage == "reward_model"
    common = [
        f"plan: {recipe.name} ({plan.device}, {plan.nodes} node(s) x {plan.gpus_per_node} = {plan.world_size} {unit})"
        + {"reward_model": ", reward-model training", "pretrain": ", continual pretraining"}.get(recipe.stage, ""),
        f"model     {recipe.model.path} [{arch.family}, {arch.num_layers} layers, hidden {arch.hidden_size}, "
        f"{arch.num_attention_heads}/{arch.num_key_value_heads} heads, {hf_param_count(arch) / 1e9:.2f}B params, "
        f"{recipe.model.dtype}]" + (" + a scalar head on the last token (no vocabulary projection)" if head else ""),
        f"{'actor' if recipe.stage == 'grpo' else 'trainer':<9} {a.backend}: tp {plan.tp} x cp {plan.cp} x dp {plan.dp} x pp {plan.pp} = "
        f"{plan.actor_world} ranks; recompute {a.recompute}; distributed optimizer "
        f"{'on' if a.distributed_optimizer else 'off'}{'; sequence parallel' if a.sequence_parallel else ''}; "
        f"lr {a.lr:g} ({a.lr_schedule}, warm-up {a.warmup_steps}); grad clip {a.grad_clip:g}; "
        f"micro-batch {a.micro_batch_tokens} tokens",
    ]
    schedule = recipe.schedule
    if recipe.stage == "pretrain":
        cpt = recipe.cpt
        mixture = ", ".join(f"{src.path} ({src.weight:g})" for src in cpt.sources)
        return common + [
            f"corpus    {mixture}; tokenized once into {cpt.cache or 'the lwz cache'}; {cpt.eval_rows} rows held out",
            f"packing   rows of {cpt.seq_length} tokens, documents joined by end-of-document tokens, attention and "
            f"positions restart at each (THD packed sequences), no loss across a boundary",
            f"batch     {cpt.tokens_per_step} tokens = {plan.sequences_per_step} rows/step, {plan.sequences_per_dp_rank} "
            f"per DP rank",
            f"schedule  {schedule.steps} steps, held-out loss every {schedule.eval_every or '-'} step(s) and at the end, "
            f"save every {schedule.save_every}, seed {schedule.seed}; the HF model goes to RUN/model",
        ]
    if head:
        rm = recipe.rm
        held = f"held out: {', '.join(rm.eval_pairs)}" if rm.eval_pairs else f"{rm.eval_fraction:g} held out"
        return common + [
            f"pairs     {', '.join(rm.pairs)} ({held}); fields {rm.prompt_field}/{rm.chosen_field}/"
            f"{rm.rejected_field}; prompt + answer <= {rm.max_length} tokens, cut from the left",
            f"loss      Bradley-Terry -log sigmoid(r(x, y_w) - r(x, y_l)); {rm.pairs_per_step} pairs/step "
            f"({plan.sequences_per_dp_rank} sequences per DP rank, both answers of a pair on one rank)",
            f"schedule  {schedule.steps} steps, held-out accuracy every {schedule.eval_every or '-'} step(s) and at "
            f"the end, save every {schedule.save_every}, seed {schedule.seed}; the HF model goes to RUN/reward_model",
        ]
    rollout = plan.engine("rollout")
    if rollout is None:
        source = f"rollout   replay of {r.replay} (its saved batches, rewards and advantages as saved; no engines)"
    else:
        source = (f"rollout   {r.engine}: {rollout.count} engine(s) x tp {r.tp}, {_where(plan, rollout)}, {r.mode}; "
                  f"G={r.group_size}, temperature {r.temperature:g}, top-p {r.top_p:g}, max {r.max_tokens} tokens "
                  f"(prompt <= {r.max_prompt_tokens}), template {r.template}"
                  + (" in the chat template" if r.chat_template else "") + _partial(recipe, plan.dp)
                  + ("; rollout only: no update, no checkpoint" if r.only else ""))
    return common + [
        source,
        f"rewards   {recipe.rewards.combine}: {terms}" + "".join(
            f"; {name}: megatron on the actor's ranks (tp {plan.tp} x pp {plan.pp}, the DP ranks share the "
            "responses), in host memory outside the reward phase" for name in plan.reward_models),
        f"algo      {recipe.algo.name}: clip [{recipe.algo.clip_low:g}, {recipe.algo.clip_high:g}], "
        f"kl {recipe.algo.kl_coef:g}, {recipe.algo.loss_agg}, {recipe.algo.mini_batches} mini-batch(es) x "
        f"{recipe.algo.epochs} epoch(s), rollout correction {_correction(recipe)}",
        f"batch     {recipe.schedule.prompts_per_step} prompts x {r.group_size} = {plan.sequences_per_step} "
        f"sequences/step, {plan.sequences_per_dp_rank} per DP rank per mini-batch",
        f"schedule  {schedule.steps} steps, save every {schedule.save_every}, seed {schedule.seed}",
    ]


def _where(plan: Plan, group) -> str:
    if group.colocated:
        return "colocated with the actor"
    ranks = plan.separate_engine_ranks(group.name)
    where = f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {ranks[0]}-{ranks[-1]}"
    return f"on GPUs of their own ({where})"


def _partial(recipe: Recipe, dp: int) -> str:
    r = recipe.rollout
    if r.mode not in ("partial", "async"):
        return ""
    flight = math.ceil(recipe.schedule.prompts_per_step * r.over_sample - 1e-9)
    unit = batch_unit(r.group_size, recipe.algo.mini_batches, dp)
    keep = recipe.schedule.prompts_per_step
    joined = f" (those done in the engine step that fills the batch join it, {unit} at a time)" if flight > keep else ""
    ahead = f", the engines {r.max_staleness - 1} batch(es) ahead" if r.mode == "async" else ""
    return (f"; {r.mode} rollout: {flight} groups in flight for {keep}{joined}, carried "
            f"samples at most {r.max_staleness} update(s) stale{ahead}, stale tokens {r.stale_tokens}")


def _correction(recipe: Recipe) -> str:
    algo = recipe.algo
    return Correction(algo.rollout_correction, algo.tis_cap, algo.correction_low, algo.correction_high).describe()


def _placement(plan: Plan) -> list[str]:
    engine_of: dict[str, dict[int, str]] = {}
    for group in plan.engines:
        engine_of[group.name] = {rank: f"{i}.{j}" for i, ranks in enumerate(group.ranks)
                                 for j, rank in enumerate(ranks)}
    names = [g.name for g in plan.engines if g.ranks]
    header = f"{'rank':>5} {'node':>4} {'gpu':>3} {'role':>8} | {'tp':>3} {'cp':>3} {'dp':>3} {'pp':>3} | " + \
        " ".join(f"{n:>10}" for n in names)
    title = "placement (engine columns: engine.rank-in-engine)" if names else "placement"
    lines = [title, header, "-" * len(header)]
    for rank in range(plan.world_size):
        node, local = plan.node_of(rank)
        c = plan.coords.get(rank)
        actor = f"{c.tp:>3} {c.cp:>3} {c.dp:>3} {c.pp:>3}" if c else f"{'-':>3} {'-':>3} {'-':>3} {'-':>3}"
        engines = " ".join(f"{engine_of[n].get(rank, '-'):>10}" for n in names)
        lines.append(f"{rank:>5} {node:>4} {local:>3} {plan.role(rank):>8} | {actor} | {engines}")
    return lines


def _memory(recipe: Recipe, plan: Plan) -> list[str]:
    where = "per GPU" if plan.device == "gpu" else "per process (host memory; not checked on CPU)"
    lines = [f"memory {where}, GiB",
             f"{'actor stage':<14}{'params':>14}{'weights':>9}{'grads':>9}{'adam':>9}{'ref':>9}{'activ.':>9}{'total':>9}"]
    for s in plan.actor_memory:
        lines.append(f"{'pp ' + str(s.stage):<14}{s.params:>14,}{_gib(s.weights)}{_gib(s.grads)}{_gib(s.optimizer)}"
                     f"{_gib(s.reference)}{_gib(s.activations)}{_gib(s.total)}")
    if any(plan.reward_models.values()):
        lines.append(f"{'reward model':<14}{'params':>14}{'weights':>9}{'activ.':>9}{'total':>9}")
    for name, stages in plan.reward_models.items():
        for m in stages:
            lines.append(f"{name + ' pp' + str(m.stage):<14}{m.params:>14,}{_gib(m.weights)}{_gib(m.activations)}"
                         f"{_gib(m.total)}")
    if any(g.ranks for g in plan.engines):
        lines.append(f"{'engine':<14}{'tp':>14}{'weights':>9}{'kv':>9}{'total':>9}{'budget':>9}")
    for g in plan.engines:
        if g.ranks:
            m = g.memory
            lines.append(f"{g.name:<14}{g.tp:>14}{_gib(m.weights)}{_gib(m.kv_cache)}{_gib(m.total)}{_gib(m.budget)}")
    actor = {k: v for k, v in plan.phase_peak.items() if not k.endswith(" GPUs")}
    peaks = ", ".join(f"{phase} {peak / GIB:.1f}" for phase, peak in actor.items())
    card = plan.card
    if plan.device == "gpu":
        lines.append(f"GPU: a {recipe.cluster.gpu_memory_gib:g} GiB card shows {card.usable / GIB:.1f} GiB to CUDA "
                     f"(x{USABLE_FRACTION:g}); per process a CUDA context of {CUDA_CONTEXT / GIB:.1f} and NCCL "
                     f"buffers of {card.communicators} communicators x {NCCL_COMMUNICATOR >> 20} MiB (models, not "
                     "measured)")
        lines.append(f"peak per actor GPU by phase: {peaks} of {card.usable / GIB:.1f} GiB usable")
    else:
        lines.append(f"peak per actor process by phase: {peaks}")
    for phase, peak in plan.phase_peak.items():
        if phase.endswith(" GPUs"):
            lines.append(f"peak per GPU of the {phase.removesuffix(' GPUs')} engines (every phase): "
                         f"{peak / GIB:.1f}" + (f" of {card.usable / GIB:.1f} GiB usable" if plan.device == "gpu" else ""))
    host = plan.host
    parts = ", ".join(f"{name} {value / 1e9:.1f}" for name, value in host.parts().items())
    limit = f" of {recipe.cluster.mem_gb} GB (cluster.mem_gb)" if recipe.cluster.mem_gb else " (cluster.mem_gb unset)"
    lines.append(f"host memory of the fullest node (node {host.node}), GB: {parts} = {host.total / 1e9:.1f}{limit}; "
                 f"processes {PROCESS_HOST[plan.device] / GIB:.0f} GiB each (a model)")
    lines.append(f"collective timeout {plan.collective_timeout_s} s"
                 + ("" if recipe.cluster.collective_timeout_s else " (cluster.collective_timeout_s unset: "
                    "30 min for update, save and sync + the longest sequence at 5 tokens/s)"))
    lines += [f"warning: {w}" for w in plan.warnings]
    return lines
