"""The recipe schema: every setting of a run, its type, default and meaning, in one place.

Each field carries its documentation and allowed values in `metadata` (`lwz.recipe.settings.setting`); the
loader validates against it and `lwz.recipe.reference` renders the README's recipe reference from it. A
reward term's parameters are the fields of its class in `lwz.rewards` (the registry names them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from lwz.algo.rollout_correction import CORRECTIONS
from lwz.recipe.settings import ArchCfg, setting
from lwz.rewards.registry import REWARDS


@dataclass
class ModelCfg:
    """The policy model."""

    path: str = setting(MISSING, "Local HF model folder (config.json, safetensors, tokenizer); "
                        "`${asset:tiny-qwen2}` names a model lwz builds locally.")
    tokenizer: Optional[str] = setting(None, "Tokenizer folder; null: model.path.")
    dtype: str = setting("bf16", "Parameter and compute dtype (fp16 is not supported yet).",
                         choices=("bf16", "fp16", "fp32"))
    arch: ArchCfg = setting(factory=ArchCfg, doc="Architecture facts (see ArchCfg).")


@dataclass
class ActorCfg:
    """The learner: Megatron-core with tensor/pipeline/sequence/data parallelism."""

    backend: str = setting("megatron", "Training backend.", choices=("megatron",))
    tp: int = setting(1, "Tensor-parallel size.", ge=1)
    pp: int = setting(1, "Pipeline-parallel size.", ge=1)
    cp: int = setting(1, "Context-parallel size (only 1 is supported yet).", ge=1)
    sequence_parallel: bool = setting(False, "Megatron sequence parallelism: activations split over the TP "
                                      "ranks (needs TP > 1).")
    recompute: str = setting("none", "Activation recomputation.", choices=("none", "full"))
    distributed_optimizer: bool = setting(True, "Shard Adam states across data-parallel ranks.")
    lr: float = setting(1.0e-6, "Peak learning rate.", gt=0)
    lr_schedule: str = setting("constant", "Decay after warm-up.", choices=("constant", "linear", "cosine"))
    warmup_steps: int = setting(0, "Linear warm-up, in optimizer steps.", ge=0)
    min_lr: float = setting(0.0, "Final learning rate of linear/cosine decay.", ge=0)
    weight_decay: float = setting(0.0, "AdamW weight decay.", ge=0)
    adam_beta1: float = setting(0.9, "Adam beta1.", ge=0, le=1)
    adam_beta2: float = setting(0.999, "Adam beta2.", ge=0, le=1)
    adam_eps: float = setting(1.0e-8, "Adam epsilon.", gt=0)
    grad_clip: float = setting(1.0, "Global gradient-norm clip; 0 disables.", ge=0)
    micro_batch_tokens: int = setting(16384, "Token budget of one micro-batch (sequences are packed "
                                      "up to it; one sequence must fit).", ge=1)
    vocab_chunk_tokens: int = setting(2048, "Response positions projected onto the vocabulary at a time, in "
                                      "the forward and again in the backward pass: the logits of one chunk "
                                      "exist at once, never those of the micro-batch.", ge=1)


@dataclass
class RolloutCfg:
    """Generation with vLLM engines."""

    engine: str = setting("vllm", "Rollout engine.", choices=("vllm",))
    tp: int = setting(1, "Tensor-parallel size of one engine.", ge=1)
    engines: Optional[int] = setting(None, "Number of engines; null: derived (colocated: actor GPUs / tp); "
                                     "required with colocate=false.", ge=1)
    colocate: bool = setting(True, "Engines share the actor's GPUs (asleep outside the rollout); false: engines "
                             "x tp GPUs of their own after the actor's (the job's last ranks), weights broadcast "
                             "to them after each update (NCCL; gloo on CPU).")
    gpu_memory_utilization: float = setting(0.6, "Fraction of each GPU an engine may take (vLLM).", gt=0, le=1)
    cpu_kv_cache_gib: Optional[float] = setting(None, "CPU only: an engine's KV cache in GiB (vLLM's "
                                                "VLLM_CPU_KVCACHE_SPACE), host memory in the plan; null: 1. Long "
                                                "responses want the batch in flight to fit, else vLLM preempts "
                                                "and recomputes sequences.", gt=0)
    group_size: int = setting(8, "Samples per prompt (GRPO's G).", ge=2)
    temperature: float = setting(0.8, "Sampling temperature; the actor's logprobs are of logits / temperature.", gt=0)
    top_p: float = setting(1.0, "Nucleus sampling. The actor's logprobs are of the whole tempered distribution, "
                           "the engine's of the nucleus (renormalised): below 1 the two differ by design "
                           "(rollout/logprob_diff shows it, 0.06 for SmolLM2 at 0.9); keep 1 for RL.", gt=0, le=1)
    max_tokens: int = setting(1024, "Longest response, in tokens; longer ones are cut and flagged truncated.", ge=1)
    max_prompt_tokens: int = setting(1024, "Longest prompt after templating, in tokens.", ge=1)
    stop: list[str] = setting(factory=lambda: ["</answer>"], doc="Stop strings (kept in the output).")
    template: str = setting("think", "Prompt template: think then answer, answer directly, or raw (the "
                            "request as it is).", choices=("think", "nothink", "raw"))
    chat_template: bool = setting(False, "Send the prompt through the tokenizer's chat template (instruct "
                                  "models): the template's instructions as the system turn, the request as "
                                  "the user turn.")
    mode: str = setting("sync", "sync: one blocking generate per step, every response finished before the "
                        "update; partial: the engine is stepped until prompts_per_step prompt groups are complete, "
                        "unfinished samples keep their tokens and engine logprobs and continue next step under the "
                        "new weights (partial rollout); one_step_off (needs colocate=false): the engines generate "
                        "step n+1 under the weights of step n while the actor trains on step n, every token one "
                        "update stale; async (needs colocate=false): the partial rollout's pool on the engines, "
                        "which run max_staleness - 1 batches ahead of the actor and take each update right after "
                        "the batch it is due at, unfinished samples continuing under it (each token's version "
                        "kept). one_step_off and async default to stale_tokens=recompute with "
                        "algo.rollout_correction=tis.", choices=("sync", "partial", "one_step_off", "async"))
    over_sample: Optional[float] = setting(None, "partial, async: prompt groups in flight per step, as a multiple "
                                           "of schedule.prompts_per_step (new prompts top the carried ones up to "
                                           "it); groups done in the same engine step as the step's last one "
                                           "join its batch, which so holds up to over_sample x prompts_per_step "
                                           "groups. null: 1 for partial, 2 for async.", ge=1)
    max_staleness: Optional[int] = setting(None, "partial, async: how many updates behind a group's oldest token "
                                           "may be when it is trained on; older groups are dropped. 0 (partial): "
                                           "unfinished samples are dropped at the end of each step (over-sampling "
                                           "without carry-over); async runs max_staleness - 1 batches ahead. "
                                           "null: 1 for partial, 2 for async.", ge=0)
    stale_tokens: Optional[str] = setting(
        None, "partial, one_step_off, async: the loss on tokens sampled under older weights: mask (out of the loss), "
        "importance (the PPO ratio against the engine's logprobs, clipped around the policy that sampled them) or "
        "recompute (the PPO ratio against the current actor's, clipped around it, the gap to the sampling policy "
        "left to algo.rollout_correction: decoupled PPO, as AReaL; verl's one-step-off recomputes too); null: "
        "recompute for one_step_off and async, else mask.", choices=("mask", "importance", "recompute"))
    replay: Optional[str] = setting(None, "A run folder whose batches were saved (logging.save_rollouts): train on "
                                    "them step by step, rewards and advantages as saved, without rollout engines "
                                    "(slime's train-only debugging; the same recipe gives the saved run's update "
                                    "metrics). Relative: to the working directory.")
    only: bool = setting(False, "Generate and score every step without training (slime's rollout-only debugging; "
                         "with logging.save_rollouts to keep the batches): no update and no checkpoint; the engines keep the "
                         "starting weights.")


@dataclass
class RewardTermCfg:
    """One reward term; `params` are checked against the fields of the term's class (lwz.rewards.registry)."""

    name: str = setting(MISSING, "Registered reward name.", choices=tuple(REWARDS))
    weight: float = setting(1.0, "Weight in the combination.", ge=0)
    params: dict[str, Any] = setting(factory=dict, doc="The term's parameters (see its params table).")


@dataclass
class RewardsCfg:
    """How rewards become one advantage."""

    combine: str = setting("mean_of_normalized", "mean_of_normalized: weighted mean of per-reward "
                           "group-normalised advantages (the paper); weighted_sum: normalise the "
                           "weighted sum of rewards.", choices=("mean_of_normalized", "weighted_sum"))
    terms: list[RewardTermCfg] = setting(factory=list, doc="Reward terms (at least one).")
    eps: float = setting(1.0e-6, "Added to the group std before dividing.", gt=0)


@dataclass
class AlgoCfg:
    """The RL algorithm."""

    name: str = setting("grpo", "Algorithm.", choices=("grpo",))
    clip_low: float = setting(0.2, "Lower clip: ratio >= 1 - clip_low.", ge=0, le=1)
    clip_high: float = setting(0.2, "Upper clip: ratio <= 1 + clip_high.", ge=0)
    clip_ratio_c: float = setting(3.0, "Dual clip: for negative advantages a token's loss stops growing at ratio "
                                  "c (stale or off-policy tokens can have ratios far above 1 + clip_high); 0: off.",
                                  ge=0)
    kl_coef: float = setting(0.0, "KL penalty to the reference policy; 0: no reference model.", ge=0)
    kl_estimator: str = setting("k3", "KL estimator.", choices=("k1", "k3"))
    loss_agg: str = setting("token_mean", "token_mean: mean over all response tokens; seq_mean: mean "
                            "over sequences of each sequence's token mean.", choices=("token_mean", "seq_mean"))
    rollout_correction: Optional[str] = setting(
        None, "Correction for the rollout engine's sampling distribution differing from the actor's, with r = "
        "p_actor / p_engine of each sampled token: tis (each token's loss weighted by min(r, tis_cap)), icepop (by r "
        "inside [correction_low, correction_high], else 0), seq_tis (every token by min(prod r, tis_cap) of its "
        "sequence), seq_mask_tis (sequences whose geometric-mean r leaves [correction_low, correction_high] left out, "
        "the others' tokens weighted by min(r, tis_cap)) or none; null: tis where rollout.stale_tokens is recompute, "
        "else none.", choices=CORRECTIONS)
    tis_cap: float = setting(2.0, "Upper bound of the tis, seq_tis and seq_mask_tis weights.", ge=1)
    correction_low: float = setting(0.5, "Lower bound of the ratio band of icepop and seq_mask_tis.", gt=0, le=1)
    correction_high: float = setting(5.0, "Upper bound of the ratio band of icepop and seq_mask_tis.", ge=1)
    mask_truncated: bool = setting(False, "Leave responses cut at rollout.max_tokens out of the loss (DAPO's "
                                   "overlong filtering); they still count in their group's reward statistics.")
    dynamic_sampling: bool = setting(False, "DAPO's dynamic sampling (needs rollout.mode=partial): drop prompt "
                                     "groups whose rewards are all equal (zero advantages) and fill the batch with "
                                     "more groups from the rollout; still short after max_sampling_rounds, dropped "
                                     "groups fill it out of the loss.")
    max_sampling_rounds: int = setting(2, "Extra rollout rounds per step for dynamic sampling.", ge=0)
    mini_batches: int = setting(1, "Optimizer steps per rollout batch.", ge=1)
    epochs: int = setting(1, "Passes over each rollout batch.", ge=1)


@dataclass
class ScheduleCfg:
    """How long and how often."""

    steps: int = setting(150, "RL steps (rollout + update).", ge=1)
    prompts_per_step: int = setting(64, "Prompts per step (each sampled group_size times).", ge=1)
    save_every: int = setting(10, "Checkpoint interval in steps; 0: only at the end.", ge=0)
    keep_checkpoints: int = setting(2, "Checkpoints kept (oldest deleted).", ge=1)
    eval_every: int = setting(0, "Evaluation interval in steps; 0: never.", ge=0)
    seed: int = setting(1234, "Seed of data order, sampling and initialisation.")


@dataclass
class EvalCfg:
    """Evaluation during training (every schedule.eval_every steps, on the live rollout engine)."""

    bench: str = setting("longbench_write", "Benchmark.", choices=("longbench_write", "writingbench"))
    limit: Optional[int] = setting(16, "Items evaluated (null: all).", ge=1)
    max_tokens: Optional[int] = setting(None, "Longest answer; null: rollout.max_tokens.", ge=1)
    template: Optional[str] = setting(None, "Prompt template; null: rollout.template.",
                                      choices=("think", "nothink", "raw"))


@dataclass
class DataCfg:
    """Training prompts."""

    prompts: list[str] = setting(factory=list, doc="JSONL/parquet files of prompts (relative to the recipe).")
    prompt_field: str = setting("prompt", "Field holding the user's request.")
    range_field: str = setting("length_range", "Field holding the [lo, hi] target word range.")
    shuffle: bool = setting(True, "Shuffle each epoch (seeded).")
    limit: Optional[int] = setting(None, "Use only the first N prompts.", ge=1)
    max_target: Optional[int] = setting(None, "Train only on prompts whose target range ends at or below this "
                                        "(words / CJK characters); null: all.", ge=1)
    min_target: Optional[int] = setting(None, "Train only on prompts whose target range starts at or above this "
                                        "(words / CJK characters); null: all.", ge=1)
    languages: list[str] = setting(factory=list, doc="Train only on prompts whose `lang` field is one of these "
                                   "(e.g. [en]); empty: all.")


@dataclass
class RewardModelCfg:
    """Reward-model training (`stage: reward_model`): the Bradley-Terry loss on preference pairs."""

    pairs: list[str] = setting(factory=list, doc="Preference pairs: JSONL/parquet/CSV files (relative to the recipe), "
                               "`save_to_disk` folders or hf:NAME[:SPLIT] datasets (from the local cache).")
    eval_pairs: list[str] = setting(factory=list, doc="Held-out pairs in the same forms; empty: eval_fraction of "
                                    "rm.pairs, whole answers held out.")
    prompt_field: str = setting("prompt", "Field holding the request.")
    chosen_field: str = setting("chosen", "Field holding the preferred answer.")
    rejected_field: str = setting("rejected", "Field holding the other answer.")
    kind_field: str = setting("kind", "Optional field labelling a pair's kind (accuracy is reported per kind).")
    eval_fraction: float = setting(0.1, "Share of rm.pairs held out when rm.eval_pairs is empty.", gt=0, le=0.5)
    pairs_per_step: int = setting(64, "Pairs in one optimizer step (over all data-parallel ranks).", ge=1)
    max_length: int = setting(8192, "Longest prompt + answer in tokens (longer: cut from the left, the answer's "
                              "end kept; the loop's scorer cuts the same way).", ge=8)


@dataclass
class CptSourceCfg:
    """One source of the pretraining mixture."""

    path: str = setting(MISSING, "A .txt file (one document), JSONL/parquet/CSV file (one document per row; relative "
                        "to the recipe), save_to_disk folder or hf:NAME[:SPLIT] dataset.")
    weight: float = setting(1.0, "Share of the training rows (weights are normalised over the sources).", gt=0)
    text_field: str = setting("text", "Field holding a row's document.")


@dataclass
class PretrainCfg:
    """Continual pretraining (`stage: pretrain`): next-token training on packed documents."""

    sources: list[CptSourceCfg] = setting(factory=list, doc="The mixture (see CptSourceCfg).")
    seq_length: int = setting(4096, "Tokens per packed row (documents joined by end-of-document tokens; attention "
                              "and positions restart at each).", ge=8)
    tokens_per_step: int = setting(262144, "Global batch in tokens (a multiple of seq_length).", ge=8)
    eval_rows: int = setting(8, "Rows held out of training (the last rows of each source, by weight); their "
                             "loss is measured every schedule.eval_every steps and at the end.", ge=1)
    cache: Optional[str] = setting(None, "Folder of the token shards; null: the lwz cache (~/.cache/lwz/tokens).")


@dataclass
class ClusterCfg:
    """Where the run executes."""

    device: str = setting("gpu", "gpu: one rank per GPU; cpu: one rank per CPU process.", choices=("gpu", "cpu"))
    launcher: str = setting("auto", "auto: SLURM when sbatch is on PATH, else local processes.",
                            choices=("auto", "slurm", "local"))
    nodes: int = setting(1, "Nodes.", ge=1)
    gpus_per_node: int = setting(8, "GPUs per node (device=cpu: worker processes per node).", ge=1)
    gpu_memory_gib: float = setting(80.0, "Memory of one GPU, GiB.", gt=0)
    cpus_per_task: int = setting(8, "CPUs per rank.", ge=1)
    mem_gb: Optional[int] = setting(None, "Memory per node, GB (SLURM --mem); null: the partition's default.", ge=1)
    partition: Optional[str] = setting(None, "SLURM partition.")
    account: Optional[str] = setting(None, "SLURM account.")
    qos: Optional[str] = setting(None, "SLURM QOS.")
    time: str = setting("24:00:00", "SLURM time limit (HH:MM:SS or D-HH:MM:SS).")
    constraint: Optional[str] = setting(None, "SLURM constraint (e.g. h100).")
    setup: list[str] = setting(factory=list, doc="Shell lines run before the job (module load, source venv).")
    container: Optional[str] = setting(None, "Container image (pyxis --container-image).")
    sbatch: dict[str, str] = setting(factory=dict, doc="Extra sbatch options, name -> value.")
    max_requeues: int = setting(3, "Times a preempted or timed-out job requeues itself.", ge=0)
    collective_timeout_s: Optional[int] = setting(None, "Seconds a rank waits in a collective (torch.distributed, "
                                                  "megatron's groups, the split layout's bridge) before the job "
                                                  "fails; a lost rank ends the job after at most this long. null: "
                                                  "sized from the rollout's budget (see lwz plan).", ge=1)


@dataclass
class WandbCfg:
    """Weights & Biases."""

    mode: str = setting("offline", "online, offline (sync later) or disabled.",
                        choices=("online", "offline", "disabled"))
    project: str = setting("lwz", "W&B project.")
    entity: Optional[str] = setting(None, "W&B entity.")
    group: Optional[str] = setting(None, "W&B group; null: the recipe name.")
    tags: list[str] = setting(factory=list, doc="W&B tags.")


@dataclass
class LoggingCfg:
    """Where results go."""

    output_dir: str = setting("runs", "Runs go to OUTPUT_DIR/<name>/<run> (relative: to the working directory).")
    run: Optional[str] = setting(None, "Run folder name; null: a timestamp.")
    samples_per_step: int = setting(4, "Samples written to the sample table each step.", ge=0)
    save_rollouts: bool = setting(False, "Keep each step's whole scored batch (token ids, engine logprobs, each "
                                  "token's policy version, rewards, advantages) in RUN/rollouts/step-N.pt, tensors "
                                  "not JSON, for rollout.replay.")
    wandb: WandbCfg = setting(factory=WandbCfg, doc="W&B settings.")


@dataclass
class Recipe:
    """A whole run."""

    name: str = setting("lwz", "Experiment name (run folder, W&B group).")
    stage: str = setting("grpo", "What the run trains: grpo (the RL loop) or reward_model (a scalar-head model "
                         "with the Bradley-Terry loss on rm.pairs) or pretrain (next-token training on cpt.sources); the "
                         "last two leave rollout, rewards, algo, data and eval unused.",
                         choices=("grpo", "reward_model", "pretrain"))
    model: ModelCfg = setting(factory=ModelCfg, doc="Policy model.")
    actor: ActorCfg = setting(factory=ActorCfg, doc="Learner.")
    rollout: RolloutCfg = setting(factory=RolloutCfg, doc="Generation.")
    rewards: RewardsCfg = setting(factory=RewardsCfg, doc="Rewards and their combination.")
    algo: AlgoCfg = setting(factory=AlgoCfg, doc="RL algorithm.")
    schedule: ScheduleCfg = setting(factory=ScheduleCfg, doc="Steps and intervals.")
    data: DataCfg = setting(factory=DataCfg, doc="Training prompts.")
    eval: EvalCfg = setting(factory=EvalCfg, doc="Evaluation during training.")
    rm: RewardModelCfg = setting(factory=RewardModelCfg, doc="Reward-model training (stage reward_model).")
    cpt: PretrainCfg = setting(factory=PretrainCfg, doc="Continual pretraining (stage pretrain).")
    cluster: ClusterCfg = setting(factory=ClusterCfg, doc="Hardware and scheduler.")
    logging: LoggingCfg = setting(factory=LoggingCfg, doc="Outputs and tracking.")
