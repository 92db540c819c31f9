"""`lwz compare`: a table and per-metric PNGs from run folders' metrics.jsonl."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lwz.track.compare import comparison_table, load_run, metric_keys, plot_comparison, read_metrics
from lwz.errors import LwzError

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(folder: Path, planned: int, rows: list[dict], tail: str = "") -> Path:
    """A synthetic run folder: recipe.yaml with schedule.steps and metrics.jsonl with `rows`."""
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"name": "exp", "schedule": {"steps": planned}}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return folder


def rows(rewards: list[float], length: float, step_time: float) -> list[dict]:
    return [{"step": i + 1, "reward/total": r, "reward/length": r / 2, "reward/format": 1.0,
             "length/answer_mean": length + i, "time/step": step_time, "actor/loss": 0.1}
            for i, r in enumerate(rewards)]


@pytest.fixture
def two_runs(tmp_path: Path) -> list[Path]:
    a = make_run(tmp_path / "exp" / "think", 4, rows([0.1, 0.5, 0.3, 0.4], 100.0, 2.0))
    b = make_run(tmp_path / "exp" / "nothink", 4, rows([0.2, 0.25], 50.0, 4.0), tail='{"step": 3, "rew')
    return [a, b]


def test_table_has_steps_final_and_best_of_each_metric(two_runs: list[Path]) -> None:
    runs = [load_run(f) for f in two_runs]
    table = comparison_table(runs).splitlines()

    assert metric_keys(runs) == ["reward/total", "reward/format", "reward/length", "length/answer_mean", "time/step"]
    assert table[0].split() == ["run", "steps", "reward/total", "final", "(best)", "reward/format", "final",
                                "(best)", "reward/length", "final", "(best)", "length/answer_mean", "final",
                                "time/step", "mean"]
    assert table[2].split() == ["think", "4/4", "0.400", "(0.500)", "1.000", "(1.000)", "0.200", "(0.250)",
                                "103.0", "2.0s"]
    assert table[3].split() == ["nothink", "2/4", "0.250", "(0.250)", "1.000", "(1.000)", "0.125", "(0.125)",
                                "51.0", "4.0s"]


def test_throughput_and_tail_are_compared_as_means_truncation_as_final(tmp_path: Path) -> None:
    """What sets a partial rollout against a sync one: trained tokens per second and the tail ratio (means
    over the steps) and the share cut at max tokens (the last step's)."""
    steps = [{"step": i + 1, "reward/total": 0.5, "time/step": 10.0, "time/tokens_per_s": tps, "rollout/tail_ratio": tail,
              "response/truncated_rate": cut, "hack/repetitive_rate": cut / 2}
             for i, (tps, tail, cut) in enumerate([(100.0, 1.5, 0.5), (300.0, 2.5, 0.25)])]
    run = load_run(make_run(tmp_path / "exp" / "partial", 2, steps))
    assert metric_keys([run]) == ["reward/total", "response/truncated_rate", "hack/repetitive_rate", "time/step",
                                  "time/tokens_per_s", "rollout/tail_ratio"]
    table = comparison_table([run]).splitlines()
    assert "time/tokens_per_s mean" in table[0] and "rollout/tail_ratio mean" in table[0]
    assert table[2].split()[-5:] == ["0.25", "0.12", "10.0s", "200.0", "2.00"]
    written = plot_comparison([run], tmp_path / "compare")
    assert {"time_tokens_per_s.png", "rollout_tail_ratio.png", "response_truncated_rate.png",
            "hack_repetitive_rate.png"} <= {p.name for p in written}


def test_plots_one_png_per_metric_with_a_line_per_run(two_runs: list[Path], tmp_path: Path) -> None:
    written = plot_comparison([load_run(f) for f in two_runs], tmp_path / "compare")
    assert sorted(p.name for p in written) == ["length_answer_mean.png", "reward_format.png", "reward_length.png",
                                               "reward_total.png", "time_step.png"]
    for path in written:
        assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 5000


def test_repeated_steps_keep_the_last_row_and_bad_lines_are_errors(tmp_path: Path) -> None:
    folder = make_run(tmp_path / "r", 3, [{"step": 1, "reward/total": 0.1}, {"step": 2, "reward/total": 0.2},
                                          {"step": 2, "reward/total": 0.9}])
    assert [r["reward/total"] for r in read_metrics(folder)] == [0.1, 0.9]
    (folder / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(LwzError, match="metrics.jsonl: line 2: not a metrics row"):
        read_metrics(folder)


def test_cli_compares_run_folders_and_writes_plots_next_to_them(two_runs: list[Path]) -> None:
    out = subprocess.run([sys.executable, "-m", "lwz.cli", "compare", *map(str, two_runs)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[2].startswith("think ")
    compare_dir = two_runs[0].parent / "compare"
    assert f"plots: 5 PNG file(s) in {compare_dir}" in out.stdout
    assert (compare_dir / "reward_total.png").read_bytes().startswith(PNG_MAGIC)


def test_cli_compares_an_experiment_from_its_run_folders(tmp_path: Path) -> None:
    experiment = tmp_path / "grid.yaml"
    experiment.write_text(yaml.safe_dump({"base": str(ROOT / "recipes" / "tiny.yaml"),
                                          "grid": {"rollout.group_size": [4, 8]}}))
    runs_dir = tmp_path / "runs" / "grid"
    make_run(runs_dir / "group_size=4", 2, rows([0.1, 0.2], 10.0, 1.0))
    make_run(runs_dir / "group_size=8", 2, rows([0.3], 10.0, 1.0))

    out = subprocess.run([sys.executable, "-m", "lwz.cli", "compare", str(experiment),
                          f"logging.output_dir={tmp_path / 'runs'}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[2].split()[:2] == ["group_size=4", "2/2"] and lines[3].split()[:2] == ["group_size=8", "1/2"]
    assert (runs_dir / "compare" / "time_step.png").is_file()


def test_one_run_at_a_glance(tmp_path: Path) -> None:
    steps = [{"step": i + 1, "reward/total": 0.1 * i, "reward/length": 0.2 * i, "length/target_mean": 150.0,
              "length/answer_mean": 40.0 + 20 * i, "response/truncated_rate": 0.5 - 0.05 * i,
              "hack/ngram_repetition_rate": 0.1, "rollout/logprob_diff": 1e-6, "time/step": 10.0,
              "time/rollout": 4.0, "time/reward": 1.0, "time/update": 4.5, "time/sync": 0.5} for i in range(6)]
    folder = make_run(tmp_path / "exp" / "one", 6, steps)
    out = subprocess.run([sys.executable, "-m", "lwz.cli", "compare", str(folder)], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("run one: 6/6 steps") and "steps 1-3" in lines[1] and "steps 4-6" in lines[1]
    by_key = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.startswith("  ")}
    assert by_key["reward/length"] == ["0.2", "0.8", "+0.6"]          # mean of steps 1-3 vs 4-6
    assert by_key["length/answer_mean"] == ["60", "120", "+60"] and by_key["length/target_mean"][0] == "150"
    assert by_key["response/truncated_rate"][:2] == ["0.45", "0.3"] and "hack/ngram_repetition_rate" in by_key
    assert "rollout/logprob_diff" in by_key
    assert "time: 10.0 s/step (rollout 40%, reward 10%, update 45%, sync 5%)" in out.stdout
    assert (folder / "compare" / "reward_total.png").read_bytes()[:8] == PNG_MAGIC


def test_table_shows_each_benchmarks_latest_evaluation(two_runs: list[Path]) -> None:
    """`lwz eval RUN` writes RUN/eval/BENCH/step-N/summary.json: the latest step's score is a column."""
    for step, score in ((2, 40.0), (4, 61.25)):
        folder = two_runs[0] / "eval" / "longbench_write" / f"step-{step:08d}"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"score": score, "items": 60}))
    runs = [load_run(f) for f in two_runs]
    assert runs[0].evals == {"longbench_write": (4, 61.25)} and runs[1].evals == {}
    table = comparison_table(runs).splitlines()
    assert table[0].split()[-3:] == ["eval", "longbench_write", "(step)"]
    assert table[2].split()[-2:] == ["61.2", "(4)"] and table[3].split()[-1] == "-"
