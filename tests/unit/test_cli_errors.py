"""Malformed recipes and overrides: one line naming the key, exit code 2, no traceback."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lwz.cli import main

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TINY = str(RECIPES / "tiny.yaml")
PAPER = str(RECIPES / "longwriter_zero.yaml")

# (overrides on the tiny recipe, key named in the error, a fragment of the message)
BAD_OVERRIDES = [
    (["rollout.grup_size=3"], "rollout.grup_size", "did you mean 'group_size'"),
    (["rollout.group_size=abc"], "rollout.group_size", "not a valid int"),
    (["rollout.group_size=1"], "rollout.group_size", "must be >= 2"),
    (["actor.tp=0"], "actor.tp", "must be >= 1"),
    (["rollout.template=thinking"], "rollout.template", "allowed: think, nothink"),
    (["rewards.terms.0.params.lmax=5"], "rewards.terms.0.params.lmax", "did you mean 'l_max'"),
    (["rewards.terms.0.params.l_max=-5"], "rewards.terms.0.params.l_max", "must be >= 1"),
    (["rewards.terms.5.weight=1"], "rewards.terms.5", "no item 5"),
    (["rewards.terms.0.name=lenght"], "rewards.terms.0.name", "did you mean 'length'"),
    (["rewards.terms.1.name=length"], "rewards.terms.1.name", "appears twice"),
    (["rewards.terms=[]"], "rewards.terms", "at least one reward term"),
    (["rewards.combine=mean"], "rewards.combine", "mean_of_normalized"),
    (["model.dtype=bf32"], "model.dtype", "allowed: bf16, fp16, fp32"),
    (["foo.bar=1"], "foo", "unknown key in the recipe"),
    (["noequals"], "noequals", "key=value"),
    (["model.path=${oc.env:LWZ_TEST_UNSET_VAR}"], "model.path", "LWZ_TEST_UNSET_VAR is not set"),
    (["algo.clip_low=1.5"], "algo.clip_low", "must be <= 1"),
    (["algo.kl_estimator=k2"], "algo.kl_estimator", "allowed: k1, k3"),
    (["logging.wandb.mode=on"], "logging.wandb.mode", "allowed: online, offline, disabled"),
    (["rollout.top_p=0"], "rollout.top_p", "must be > 0"),
    (["rollout.max_tokens=5000"], "actor.micro_batch_tokens", "smaller than one sequence"),
    (["cluster.gpus_per_node=3"], "schedule.prompts_per_step", "data-parallel size 3"),
    (["actor.tp=2"], "actor", "world size 1"),
    (["actor.sequence_parallel=true"], "actor.sequence_parallel", "needs actor.tp > 1"),
    (["rollout.stop.3=x"], "rollout.stop.3", "no item 3"),
    (["schedule.steps=ten"], "schedule.steps", "not a valid int"),
    (["cluster.device=tpu"], "cluster.device", "allowed: gpu, cpu"),
    (["actor.recompute=selective"], "actor.recompute", "allowed: none, full"),
    (["rewards.terms.0.params={l_max: 10, zero: 1}"], "rewards.terms.0.params.zero", "unknown parameter"),
]

# (recipe text, key, fragment) for files that are broken themselves
BAD_FILES = [
    ("model: {path: x\n", None, "invalid YAML"),
    ("- just\n- a list\n", None, "mapping of sections"),
    ("base: missing.yaml\n", "base", "not found"),
    ("base: self.yaml\n", "base", "inheritance cycle"),
    ("modle: {path: x}\n", "modle", "did you mean 'model'"),
    ("model: {path: x, arch: {num_layers: two}}\n", "model.arch.num_layers", "not a valid int"),
    ("base: tiny.yaml\nrollout: {temperature: hot}\n", "rollout.temperature", "not a valid float"),
    ("base: tiny.yaml\nrewards: {terms: [{name: writing_rm}]}\n", "rewards.terms.0.params.model",
     "required by the 'writing_rm' reward"),
    ("rollout: {group_size: 4}\n", "model.path", "required"),
]


def run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("overrides, key, fragment", BAD_OVERRIDES, ids=[o[0][0][:40] for o in BAD_OVERRIDES])
def test_bad_override(overrides, key, fragment, capsys):
    code, err = run_cli(["plan", TINY, *overrides], capsys)
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("lwz: error: ")
    assert f": {key}: " in err and fragment in err, err


@pytest.mark.parametrize("text, key, fragment", BAD_FILES, ids=[f[2] for f in BAD_FILES])
def test_bad_recipe_file(text, key, fragment, tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(Path(TINY).read_text())
    recipe = tmp_path / "self.yaml"
    recipe.write_text(text)
    code, err = run_cli(["plan", str(recipe)], capsys)
    assert code == 2 and err.count("\n") == 0, err
    assert str(tmp_path) in err, err
    assert fragment in err and (key is None or f": {key}: " in err), err


def test_error_from_a_subprocess_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "lwz.cli", "plan", PAPER, "actor.tp=3"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "longwriter_zero.yaml: actor" in proc.stderr


def test_count_of_malformed_cases():
    assert len(BAD_OVERRIDES) + len(BAD_FILES) >= 25


def test_dry_run_writes_recipe_and_plan_and_starts_nothing(tmp_path, capsys, paper_models):
    code = main(["run", PAPER, "--dry-run", f"logging.output_dir={tmp_path}", "logging.run=r1"])
    assert code == 0
    folder = tmp_path / "longwriter_zero" / "r1"
    recipe_text = (folder / "recipe.yaml").read_text()
    assert "group_size: 32" in recipe_text and recipe_text.startswith("# resolved by lwz")
    assert "rank node gpu" in (folder / "plan.txt").read_text()
    assert not any((folder / "ckpt").iterdir())
    assert str(folder) in capsys.readouterr().out


def test_a_resumed_run_may_change_how_long_it_goes_on_and_nothing_that_shaped_its_steps(tmp_path, capsys,
                                                                                         paper_models):
    assert main(["run", PAPER, "--dry-run", f"logging.output_dir={tmp_path}", "logging.run=r1"]) == 0
    folder = tmp_path / "longwriter_zero" / "r1"
    before = (folder / "recipe.yaml").read_text()
    code, err = run_cli(["run", str(folder), "--dry-run", "rollout.group_size=8"], capsys)
    assert code == 2 and err.count("\n") == 0 and f"{folder}: rollout.group_size: a started run keeps" in err, err
    from lwz.actor.checkpoint import EXTRA

    checkpoint = folder / "ckpt" / "step-00000030"     # what a complete checkpoint holds, as the loader checks
    checkpoint.mkdir()
    (checkpoint / EXTRA).write_text("{}")
    (checkpoint / "metadata.json").write_text("{}")
    (folder / "ckpt" / "latest").write_text("step-00000030\n")
    code, err = run_cli(["run", str(folder), "--dry-run", "schedule.steps=20"], capsys)
    assert code == 2 and "schedule.steps: 20 is fewer than the 30 steps the run has checkpointed" in err, err
    assert (folder / "recipe.yaml").read_text() == before          # nothing written by a refusal
    assert main(["run", str(folder), "--dry-run", "schedule.steps=900", "schedule.save_every=25"]) == 0
    recipe = (folder / "recipe.yaml").read_text()
    assert "steps: 900" in recipe and "save_every: 25" in recipe and "resumed with schedule.steps=900" in recipe
    assert "schedule  900 steps, save every 25" in (folder / "plan.txt").read_text()
    body = lambda text: {line for line in text.splitlines() if not line.startswith("#")}  # noqa: E731
    assert all(line.strip().startswith(("steps:", "save_every:")) for line in body(recipe) ^ body(before))


def test_inheritance_and_overrides(tmp_path):
    from lwz.recipe.load import load_recipe

    (tmp_path / "data").mkdir()
    child = tmp_path / "child.yaml"
    child.write_text(textwrap.dedent(f"""\
        base: {PAPER}
        name: child
        rollout: {{group_size: 16}}
        data: {{prompts: [data/p.jsonl]}}
    """))
    recipe = load_recipe(child, ["rewards.terms.0.weight=0.5", "rollout.stop=[</answer>, <|user|>]"])
    assert recipe.name == "child" and recipe.rollout.group_size == 16
    assert recipe.rollout.temperature == 0.8                      # inherited
    assert recipe.rewards.terms[0].weight == 0.5                    # list item override
    assert recipe.rollout.stop == ["</answer>", "<|user|>"]
    assert recipe.data.prompts == [str(tmp_path / "data" / "p.jsonl")]   # relative to the defining file


def test_environment_interpolation(monkeypatch):
    from lwz.recipe.load import load_recipe

    monkeypatch.setenv("LWZ_MODELS", "/cluster/models")
    assert load_recipe(PAPER).model.path == "/cluster/models/Qwen2.5-32B"


def test_arch_is_read_from_a_local_config_json(tmp_path):
    import json

    from lwz.recipe.load import load_recipe

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "num_hidden_layers": 3, "hidden_size": 64, "num_attention_heads": 2,
        "num_key_value_heads": 1, "intermediate_size": 128, "vocab_size": 1000,
        "max_position_embeddings": 2048, "rope_theta": 10000.0, "tie_word_embeddings": True}))
    recipe = load_recipe(TINY, [f"model.path={model}", "model.arch={}"])
    assert recipe.model.arch.num_layers == 2          # the recipe's value wins over config.json
    recipe = load_recipe(TINY, [f"model.path={model}", "model.arch.num_layers=null", "model.arch.vocab_size=null"])
    assert (recipe.model.arch.num_layers, recipe.model.arch.vocab_size) == (3, 1000)


def test_eval_of_a_run_without_a_checkpoint_is_refused_before_anything_is_written(tmp_path, capsys, paper_models):
    assert main(["run", PAPER, "--dry-run", f"logging.output_dir={tmp_path}", "logging.run=r1"]) == 0
    folder = tmp_path / "longwriter_zero" / "r1"
    code, err = run_cli(["eval", str(folder), "--bench", "longbench_write"], capsys)
    assert code == 2 and err.count("\n") == 0 and "the run has no checkpoint yet" in err, err
    assert not (folder / "eval").exists() and not (folder / "export").exists() and not (folder / "logs").exists()
