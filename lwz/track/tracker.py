"""Tracking: metrics.jsonl, sample files, plots and W&B for one run folder.

Only rank 0 tracks (`Tracker(..., enabled=True)`); other ranks get a tracker that does nothing and
never imports wandb. Metric keys the plots and the step line know: `reward/<term>` and
`reward/total`, `length/answer_mean`, `length/target_mean`, `length/think_mean`, `time/rollout`,
`time/reward`, `time/update`, `time/sync` (and `time/step`, the whole step).
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import secrets
import struct
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO
from urllib.parse import urlsplit

from omegaconf import OmegaConf

from lwz import atomic
from lwz.errors import LwzError
from lwz.track.plots import LENGTH_KEYS, REWARD_PREFIX, THINK_KEYS, TIME_KEYS, TOTAL_REWARD, plot_metrics
from lwz.recipe.schema import Recipe

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SAMPLES_DIR = "samples"
PLOTS_DIR = "plots"
WANDB_DIR = "wandb"
RUN_ID_FILE = "run_id"  # inside WANDB_DIR: the W&B run id, so a resumed run continues the same W&B run
STEP_TIME = "time/step"
SAMPLE_FIRST_COLUMNS = ("prompt", "think", "answer")
ONLINE_INIT_TIMEOUT_S = 15.0  # how long an online W&B start may take before the run logs offline


class Tracker:
    """Writes a run's metrics, samples and plots to its folder and to W&B; a context manager.

    `enabled=False` (ranks other than 0): every method does nothing. `resume_step`: the first step
    this start will log; metrics.jsonl rows from it on are dropped, and W&B continues the run whose
    id is kept in wandb/run_id.
    """

    def __init__(self, run_dir: Path, recipe: Recipe, *, enabled: bool = True,
                 resume_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._run: Any = None
        self._metrics_file: TextIO | None = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            truncate_metrics(self.run_dir / METRICS_FILE, resume_step)
        self._run = _init_wandb(self.run_dir, recipe)
        self._metrics_file = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Append {"step": step, **metrics} to metrics.jsonl (flushed and fsynced) and log to W&B."""
        if self._metrics_file is None:
            return
        assert "step" not in metrics, "'step' is the row's own key, not a metric"
        values = {key: float(value) for key, value in metrics.items()}
        self._metrics_file.write(json.dumps({"step": step, **values}) + "\n")
        self._metrics_file.flush()
        os.fsync(self._metrics_file.fileno())
        if self._run is not None:
            self._run.log(values, step=step)

    def log_samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        """Write samples/step_NNNNNN.jsonl (all `rows`, the caller picks them) and a W&B table."""
        if not self.enabled:
            return
        text = "".join(json.dumps(row, ensure_ascii=False, default=_plain) + "\n" for row in rows)
        atomic.write_text(self.run_dir / SAMPLES_DIR / f"step_{step:06d}.jsonl", text)
        if self._run is not None and rows:
            self._run.log({"samples": _samples_table(rows)}, step=step)

    def plot(self) -> list[Path]:
        """Redraw the PNGs in plots/ from metrics.jsonl; returns the files written."""
        if not self.enabled:
            return []
        return plot_metrics(read_metrics(self.run_dir / METRICS_FILE), self.run_dir / PLOTS_DIR)

    def close(self, exit_code: int = 0) -> None:
        """Close metrics.jsonl, draw the plots and finish the W&B run (once)."""
        if self._metrics_file is None:
            return
        self._metrics_file.close()
        self._metrics_file = None
        try:
            self.plot()
        finally:
            if self._run is not None:
                import wandb

                self._run.finish(exit_code=exit_code)
                self._run = None
                wandb.teardown()  # finish() can return before the .wandb file is complete; this waits

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(exit_code=0 if exc_type is None else 1)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a metrics.jsonl by step, the last row of a repeated step winning; a torn last line (a run
    killed mid-write) is left out, any other bad line is an LwzError naming it. No file: no rows."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    by_step: dict[int, dict[str, float]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            by_step[int(row["step"])] = row
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            if number == len(lines):
                logger.warning("%s: ignoring the torn last line %d", path, number)
                continue
            raise LwzError(str(path), f"line {number}", "not a metrics row ({\"step\": n, ...})") from None
    return [by_step[step] for step in sorted(by_step)]


def truncate_metrics(path: Path, resume_step: int) -> None:
    """Drop the rows with step >= resume_step (atomically), so a resumed run logs each step once."""
    rows = read_metrics(path)
    kept = [row for row in rows if row["step"] < resume_step]
    if path.is_file():
        atomic.write_text(path, "".join(json.dumps(row) + "\n" for row in kept))
        logger.info("resuming at step %d: dropped %d metric rows", resume_step, len(rows) - len(kept))


def format_step_line(step: int, total: int, metrics: Mapping[str, float]) -> str:
    """One line per step, `step` counted from 1:
    `step 12/150 | reward 0.734 (format 1.000 length 0.812) | answer 2310/2500 | think 420 |
    95.2s (rollout 60.1 reward 20.0 update 12.0 sync 3.1) | ETA 3h26m`; missing metrics are left out."""
    parts = [f"step {step}/{total}"]
    terms = " ".join(f"{key.removeprefix(REWARD_PREFIX)} {value:.3f}" for key, value in sorted(metrics.items())
                     if key.startswith(REWARD_PREFIX) and key != TOTAL_REWARD)
    if TOTAL_REWARD in metrics:
        parts.append(f"reward {metrics[TOTAL_REWARD]:.3f}" + (f" ({terms})" if terms else ""))
    elif terms:
        parts.append(f"reward ({terms})")
    answer, response, target = (metrics.get(key) for key in LENGTH_KEYS)
    if answer is not None or response is not None:  # the answer's length, else the whole response's
        parts.append(("answer" if answer is not None else "words") + f" {answer if answer is not None else response:.0f}"
                     + (f"/{target:.0f}" if target is not None else ""))
    if (think := metrics.get(THINK_KEYS[0])) is not None:
        parts.append(f"think {think:.0f}")
    split = {key.removeprefix("time/"): metrics[key] for key in TIME_KEYS if key in metrics}
    step_time = metrics.get(STEP_TIME, sum(split.values()) if split else None)
    if step_time is not None:
        detail = " ".join(f"{name} {seconds:.1f}" for name, seconds in split.items())
        parts.append(f"{step_time:.1f}s" + (f" ({detail})" if detail else ""))
        parts.append(f"ETA {_duration(step_time * max(total - step, 0))}")
    return " | ".join(parts)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _samples_table(rows: list[dict[str, Any]]) -> Any:
    """A W&B table with prompt, think, answer first, then every other key the rows have."""
    import wandb

    keys = dict.fromkeys(key for row in rows for key in row)
    columns = [key for key in SAMPLE_FIRST_COLUMNS if key in keys] + [
        key for key in keys if key not in SAMPLE_FIRST_COLUMNS]
    return wandb.Table(columns=columns, data=[[_table_cell(row.get(key)) for key in columns] for row in rows])


def _table_cell(value: Any) -> Any:
    value = _plain(value) if hasattr(value, "tolist") else value
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, ensure_ascii=False, default=_plain)


def _plain(value: Any) -> Any:
    """numpy and torch values as Python numbers and lists (json.dumps' `default`)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _init_wandb(run_dir: Path, recipe: Recipe) -> Any:
    """The W&B run of the run folder, or None when disabled; online falls back to offline."""
    cfg = recipe.logging.wandb
    if cfg.mode == "disabled":
        return None
    import wandb  # here, not at the top: ranks that do not track never pay for the import

    os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")   # no Weave advert when vLLM has imported openai

    args = dict(project=cfg.project, entity=cfg.entity, group=cfg.group or recipe.name, tags=list(cfg.tags),
                name=run_dir.name, dir=str(run_dir), id=_run_id(run_dir), resume="allow",
                config=OmegaConf.to_container(OmegaConf.structured(recipe), resolve=True))
    if cfg.mode == "online" and not _has_wandb_credentials():
        logger.warning("W&B online needs WANDB_API_KEY or a netrc entry; logging offline to %s "
                       "(upload later with `wandb sync`)", run_dir / WANDB_DIR)
    elif cfg.mode == "online":
        try:
            settings = wandb.Settings(init_timeout=ONLINE_INIT_TIMEOUT_S, silent=True)
            run = wandb.init(mode="online", settings=settings, **args)
            logger.info("W&B run: %s", run.url)
            return run
        except Exception as e:  # any failure to reach W&B (network, auth, timeout) means: log offline
            logger.warning("W&B online start failed (%s); logging offline to %s (upload later with `wandb sync`)",
                           str(e).splitlines()[0] if str(e) else type(e).__name__, run_dir / WANDB_DIR)
            wandb.teardown()  # frees the run id the failed start still holds
    run = wandb.init(mode="offline", settings=wandb.Settings(silent=True), **args)  # silent: no banners
    logger.info("W&B offline: upload with `wandb sync %s`", Path(run.dir).parent)
    return run


def _run_id(run_dir: Path) -> str:
    """The run folder's W&B id, created on first use."""
    path = run_dir / WANDB_DIR / RUN_ID_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    run_id = secrets.token_hex(4)
    atomic.write_text(path, run_id + "\n")
    return run_id


def _has_wandb_credentials() -> bool:
    """Whether W&B could authenticate: an API key or identity token in the environment, or a netrc entry."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", "~/.netrc")).expanduser()
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except FileNotFoundError:
        return False
    except (OSError, netrc.NetrcParseError) as e:
        logger.warning("cannot read %s: %s", path, e)
        return False


# The .wandb file: a header, then LevelDB-log records (a payload may span 32 KiB blocks) holding
# serialized `wandb_internal_pb2.Record`s.
_FILE_HEADER = struct.Struct("<4sHB")  # ident b":W&B", magic 0xBEE1, version 0
_RECORD_HEADER = struct.Struct("<IHB")  # crc32 of type byte + data, data length, record type
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_offline_run(wandb_dir: Path) -> list[dict[str, Any]]:
    """The history rows logged to the offline runs under `wandb_dir` (a run folder's wandb/), oldest first.

    A resumed run has one offline-run-* folder per start; their rows are concatenated in time order.
    Keys are as logged plus W&B's `_step`, `_runtime`, `_timestamp`; a table is a dict of its fields.
    """
    from wandb.proto import wandb_internal_pb2

    rows = []
    for path in sorted(Path(wandb_dir).glob("offline-run-*/run-*.wandb")):
        for payload in _payloads(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            if record.WhichOneof("record_type") == "history":
                rows.append(_history_row(record.history))
    return rows


def _history_row(history: Any) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for item in history.item:
        *parents, leaf = list(item.nested_key) or [item.key]
        node = row
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = json.loads(item.value_json)
    return row


def _payloads(path: Path) -> Iterator[bytes]:
    """The record payloads of a .wandb file; a record cut short by a crash ends the file."""
    data = path.read_bytes()
    ident, magic, version = _FILE_HEADER.unpack_from(data)
    if (ident, magic, version) != (b":W&B", 0xBEE1, 0):
        raise ValueError(f"{path}: not a W&B run file (header {ident!r} {magic:#x} {version})")
    offset, pending = _FILE_HEADER.size, b""
    while True:
        if _BLOCK - offset % _BLOCK < _RECORD_HEADER.size:
            offset += _BLOCK - offset % _BLOCK  # the block's zero padding
        if offset + _RECORD_HEADER.size > len(data):
            return
        crc, length, kind = _RECORD_HEADER.unpack_from(data, offset)
        offset += _RECORD_HEADER.size
        chunk = data[offset:offset + length]
        offset += length
        if len(chunk) < length:
            return
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"{path}: checksum mismatch at byte {offset - length}")
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
        else:
            raise ValueError(f"{path}: unknown record type {kind} at byte {offset - length}")
