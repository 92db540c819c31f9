"""Tracking: real W&B offline runs read back from their .wandb files, metrics.jsonl, samples, plots."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from wandb.proto import wandb_internal_pb2

from lwz.track import tracker as track
from lwz.track.plots import plot_metrics
from lwz.recipe.schema import LoggingCfg, ModelCfg, Recipe, WandbCfg
from lwz.errors import LwzError
from lwz.track import Tracker, format_step_line, read_metrics, read_offline_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEPS = 120  # enough history for the .wandb file to span several 32 KiB blocks


def make_recipe(mode: str = "offline") -> Recipe:
    return Recipe(name="track_test", model=ModelCfg(path="/models/none"),
                  logging=LoggingCfg(wandb=WandbCfg(mode=mode, project="lwz-test", tags=["unit", "cpu"])))


def step_metrics(step: int) -> dict[str, float]:
    return {"reward/length": 0.5 + step / 1000, "reward/format": 1.0, "reward/total": 0.75 + step / 2000,
            "length/answer_mean": 1000.0 + step, "length/target_mean": 2000.0, "length/think_mean": 300.0,
            "time/rollout": 6.0, "time/reward": 1.5, "time/update": 2.0, "time/sync": 0.5}


SAMPLES = [{"prompt": "Write a story.", "think": "plan", "answer": "Once upon a time.", "reward/length": 0.25,
            "answer_length": 4, "target": [800, 1200]},
           {"prompt": "写一首诗。", "think": "", "answer": "春眠不觉晓", "reward/length": 0.0,
            "answer_length": 5, "target": [0, 0]}]
# What the loop may hand over: numpy values, written as plain JSON numbers and lists.
NUMPY_SAMPLES = [{**row, "reward/length": np.float32(row["reward/length"]),
                  "answer_length": np.int64(row["answer_length"]), "target": np.array(row["target"])}
                 for row in SAMPLES]


def records(run_file: Path) -> list[wandb_internal_pb2.Record]:
    out = []
    for payload in track._payloads(run_file):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        out.append(record)
    return out


def run_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.fixture(scope="module")
def offline_run(module_folder) -> Path:
    """One offline run of STEPS steps with samples at steps 1 and 2 (numpy values), closed (so plotted)."""
    run_dir = module_folder("runs") / "track_test" / "run-a"
    with Tracker(run_dir, make_recipe()) as tracker:
        for step in range(1, STEPS + 1):
            tracker.log(step, step_metrics(step))
            if step <= 2:
                tracker.log_samples(step, SAMPLES if step == 1 else NUMPY_SAMPLES)
    return run_dir


def test_offline_run_holds_the_logged_metrics(offline_run: Path) -> None:
    assert offline_run.joinpath("wandb", "run-a").exists() is False  # W&B writes under wandb/ only
    [run_file] = run_files(offline_run)
    assert run_file.stat().st_size > 2 * 32768
    rows = [row for row in read_offline_run(offline_run / "wandb") if "reward/total" in row]
    assert [row["_step"] for row in rows] == list(range(1, STEPS + 1))
    for row in rows:
        for key, value in step_metrics(row["_step"]).items():
            assert row[key] == pytest.approx(value)


def test_wandb_run_has_the_recipe_name_group_tags_and_id(offline_run: Path) -> None:
    [run_file] = run_files(offline_run)
    [run] = [r.run for r in records(run_file) if r.WhichOneof("record_type") == "run"]
    run_id = (offline_run / "wandb" / "run_id").read_text().strip()
    assert (run.run_id, run.display_name, run.project) == (run_id, "run-a", "lwz-test")
    assert run.run_group == "track_test"  # the recipe name: WandbCfg.group is null
    assert list(run.tags) == ["unit", "cpu"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["name"] == "track_test"
    assert config["logging"]["wandb"]["mode"] == "offline"
    [exit_record] = [r.exit for r in records(run_file) if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 0


def test_metrics_jsonl_has_every_step_once(offline_run: Path) -> None:
    rows = read_metrics(offline_run / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(1, STEPS + 1))
    assert rows[41] == {"step": 42, **step_metrics(42)}


def test_samples_go_to_jsonl_files_and_a_wandb_table(offline_run: Path) -> None:
    for step in (1, 2):
        lines = (offline_run / "samples" / f"step_{step:06d}.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == SAMPLES
    assert not (offline_run / "samples" / "step_000003.jsonl").exists()
    tables = [row["samples"] for row in read_offline_run(offline_run / "wandb") if "samples" in row]
    assert [(t["_type"], t["nrows"], t["ncols"]) for t in tables] == [("table-file", 2, 6)] * 2
    [run_file] = run_files(offline_run)
    for meta in tables:
        table = json.loads((run_file.parent / "files" / meta["path"]).read_text(encoding="utf-8"))
        assert table["columns"] == ["prompt", "think", "answer", "reward/length", "answer_length", "target"]
        assert table["data"] == [["Write a story.", "plan", "Once upon a time.", 0.25, 4, "[800, 1200]"],
                                 ["写一首诗。", "", "春眠不觉晓", 0.0, 5, "[0, 0]"]]


def test_close_draws_every_plot_as_png(offline_run: Path) -> None:
    names = sorted(path.name for path in (offline_run / "plots").iterdir())
    assert names == ["length.png", "rewards.png", "step_time.png", "think_length.png"]
    for name in names:
        assert (offline_run / "plots" / name).read_bytes().startswith(PNG_MAGIC)


def test_plots_without_their_metrics_are_skipped(tmp_path: Path) -> None:
    rows = [{"step": 1, "reward/total": 0.5}, {"step": 2, "reward/total": 0.6, "time/rollout": 3.0}]
    written = plot_metrics(rows, tmp_path / "plots")
    assert [path.name for path in written] == ["rewards.png", "step_time.png"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["rewards.png", "step_time.png"]


def test_resume_drops_later_metrics_and_continues_the_wandb_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run-r"
    with pytest.raises(RuntimeError, match="crash"), Tracker(run_dir, make_recipe()) as tracker:
        for step in range(1, 9):
            tracker.log(step, {"reward/total": float(step)})
        raise RuntimeError("crash")
    run_id = (run_dir / "wandb" / "run_id").read_text().strip()

    with Tracker(run_dir, make_recipe(), resume_step=5) as tracker:
        assert [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3, 4]
        for step in range(5, 8):
            tracker.log(step, {"reward/total": 10.0 * step})

    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [(row["step"], row["reward/total"]) for row in rows] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0), (6, 60.0), (7, 70.0)]
    first, second = run_files(run_dir)
    assert first.name == second.name == f"run-{run_id}.wandb"
    exit_codes = [r.exit.exit_code for f in (first, second) for r in records(f)
                  if r.WhichOneof("record_type") == "exit"]
    assert exit_codes == [1, 0]
    history = [(row["_step"], row["reward/total"]) for row in read_offline_run(run_dir / "wandb")]
    assert history == [(s, float(s)) for s in range(1, 9)] + [(s, 10.0 * s) for s in range(5, 8)]


def test_read_metrics_ignores_a_torn_last_line_only(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a"')
    assert read_metrics(path) == [{"step": 1, "a": 1.0}]
    path.write_text('{"step": 1, "a"\n{"step": 2, "a": 1.0}\n')
    with pytest.raises(LwzError, match="metrics.jsonl: line 1: not a metrics row"):
        read_metrics(path)


def test_disabled_mode_writes_no_wandb_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run-d"
    with Tracker(run_dir, make_recipe("disabled")) as tracker:
        tracker.log(1, step_metrics(1))
        tracker.log_samples(1, SAMPLES)
    assert sorted(path.name for path in run_dir.iterdir()) == ["metrics.jsonl", "plots", "samples"]
    assert read_metrics(run_dir / "metrics.jsonl") == [{"step": 1, **step_metrics(1)}]


def test_a_tracker_that_is_not_enabled_writes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run-n"
    with Tracker(run_dir, make_recipe(), enabled=False) as tracker:
        tracker.log(1, step_metrics(1))
        tracker.log_samples(1, SAMPLES)
        assert tracker.plot() == []
    assert not run_dir.exists()


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lwz.track.tracker" and r.levelno == logging.WARNING]


def test_online_without_credentials_logs_offline_with_one_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_IDENTITY_TOKEN_FILE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    run_dir = tmp_path / "run-o"
    with caplog.at_level(logging.WARNING, logger="lwz.track.tracker"), Tracker(run_dir, make_recipe("online")) as tracker:
        tracker.log(1, {"reward/total": 0.5})
    [warning] = fallback_warnings(caplog)
    assert "logging offline" in warning
    assert [row["reward/total"] for row in read_offline_run(run_dir / "wandb")] == [0.5]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_online_with_unreachable_server_logs_offline_quickly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(track, "ONLINE_INIT_TIMEOUT_S", 2.0)
    run_dir = tmp_path / "run-u"
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="lwz.track.tracker"), Tracker(run_dir, make_recipe("online")) as tracker:
        tracker.log(1, {"reward/total": 0.5})
    assert time.monotonic() - start < 30
    [warning] = fallback_warnings(caplog)
    assert "online start failed" in warning
    assert [row["reward/total"] for row in read_offline_run(run_dir / "wandb")] == [0.5]


def test_step_line_is_one_concise_line() -> None:
    line = format_step_line(12, 150, {**step_metrics(0), "time/step": 10.0, "actor/loss": 0.1})
    assert line == ("step 12/150 | reward 0.750 (format 1.000 length 0.500) | answer 1000/2000 | think 300 | "
                    "10.0s (rollout 6.0 reward 1.5 update 2.0 sync 0.5) | ETA 23m00s")


def test_step_line_leaves_out_missing_metrics() -> None:
    assert format_step_line(3, 3, {"reward/total": 0.1, "time/rollout": 4000.0}) == (
        "step 3/3 | reward 0.100 | 4000.0s (rollout 4000.0) | ETA 0s")
    assert format_step_line(1, 3, {"time/update": 4000.0}) == "step 1/3 | 4000.0s (update 4000.0) | ETA 2h13m"


def test_step_line_shows_the_response_length_without_an_answer() -> None:
    """No <answer> anywhere (an instruct model rewarded on its whole response): the response's words."""
    line = format_step_line(2, 6, {"reward/total": 0.8, "length/response_mean": 71.4, "length/target_mean": 60.0})
    assert line == "step 2/6 | reward 0.800 | words 71/60"
    both = {"length/answer_mean": 50.0, "length/response_mean": 71.4, "length/target_mean": 60.0}
    assert format_step_line(2, 6, both) == "step 2/6 | answer 50/60"


def test_wandb_prints_no_banner_of_its_own(tmp_path: Path, capfd: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline W&B start and finish leave the terminal to lwz (no "wandb: ..." advertising lines), also
    with `openai` imported (vLLM imports it; W&B then advertises Weave)."""
    import openai  # noqa: F401  (the real package, as vLLM imports it)

    monkeypatch.setenv("WANDB_DISABLE_WEAVE", "false")   # restored after the test
    monkeypatch.delenv("WANDB_DISABLE_WEAVE")
    with Tracker(tmp_path / "quiet", make_recipe()) as tracker:
        tracker.log(1, step_metrics(1))
    captured = capfd.readouterr()
    assert "wandb:" not in captured.out + captured.err, captured
    assert (tmp_path / "quiet" / "metrics.jsonl").is_file()
