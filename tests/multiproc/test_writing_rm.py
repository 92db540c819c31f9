"""The writing reward model: pairs files, encoding, the tiny RM asset's training, what the loop can serve (the
serving itself, megatron on the actor's grid: tests/multiproc/test_writing_rm_serving.py)."""

import json
from importlib.resources import files
from pathlib import Path

import pytest

from fixtures_models import minilm_path
from lwz.errors import LwzError
from lwz.rewards.writing_rm import RewardModelError, WritingRMReward, check_reward_model_folder
from lwz.rm.data import load_pairs, split_pairs, synthetic_pairs
from lwz.rm.model import encode, forward_scores, load_backbone
from lwz.rm.train import TINY_RM_SETTINGS, TrainSettings, tiny_writing_rm_path, train_reward_model


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


def test_what_the_loop_cannot_serve_is_a_user_error(tmp_path):
    with pytest.raises(LwzError, match="no config.json"):
        check_reward_model_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "num_labels": 2}))
    with pytest.raises(LwzError, match="num_labels must be 1"):
        check_reward_model_folder(tmp_path, "rewards.terms.2.params.model")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "num_labels": 1}))
    with pytest.raises(LwzError, match="'bert' reward model cannot be served"):
        check_reward_model_folder(tmp_path)
    assert check_reward_model_folder(tiny_writing_rm_path()) == tiny_writing_rm_path()
    with pytest.raises(LwzError, match="on_failure"):
        WritingRMReward(model=str(tmp_path), on_failure="ignore")
    term = WritingRMReward(model=str(tmp_path), on_failure="skip_term")
    with pytest.raises(RewardModelError, match="not built"):
        term(["<answer>x</answer>"], [{"prompt": "p"}])


@pytest.mark.slow
def test_tiny_writing_rm_reaches_90_percent_on_held_out_pairs_and_is_built_once():
    """The asset: `train_reward_model` on the packaged pairs from the tiny Qwen2 (a decoder: the loop serves it
    with megatron), held-out pairs never sharing a chosen answer with training ones."""
    path = tiny_writing_rm_path()
    metrics = json.loads((path / "metrics.json").read_text())
    print(f"\ntraining took {metrics['seconds']}s; metrics: {metrics['eval']}")
    assert metrics["eval_accuracy"] >= 0.9 > metrics["eval_accuracy_before"]
    pairs = load_pairs(Path(str(files("lwz") / "assets" / "rm" / "writing_pairs.jsonl")))
    assert metrics["eval_pairs"] + metrics["train_pairs"] == len(pairs)
    assert json.loads((path / "config.json").read_text())["architectures"] == ["Qwen2ForSequenceClassification"]
    assert not list(path.parent.glob(f".{path.name}.*"))
    stamp = (path / "config.json").stat().st_mtime_ns
    assert tiny_writing_rm_path() == path and (path / "config.json").stat().st_mtime_ns == stamp
    with pytest.raises(LwzError, match="already exists"):
        train_reward_model(path, pairs, path, TrainSettings())
    good = "The report describes the method. It then presents the results and their limits."
    bad = "The report describes the method. The report describes the method."
    scores = transformers_scores(path, ["Write a short report."] * 2, [good, bad], TINY_RM_SETTINGS.max_length)
    assert scores[0] > scores[1]
