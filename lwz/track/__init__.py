"""What a run records and shows: the tracker (metrics.jsonl, samples, W&B), the step's metrics
(`step_report`), the plots (`plots`) and `lwz compare` (`compare`)."""

from lwz.track.tracker import METRICS_FILE, Tracker, format_step_line, read_metrics, read_offline_run

__all__ = ["METRICS_FILE", "Tracker", "format_step_line", "read_metrics", "read_offline_run"]
