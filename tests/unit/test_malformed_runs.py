"""A corpus of malformed runs (tests/malformed/runs.yaml): each fails before anything starts.

Every case runs the `lwz` command in-process on files written into its own folder: exit code 2, one
line on stderr that names the file, row or key (the case's expected message), no traceback, and no
run folder left behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lwz.cli import main

REPO = Path(__file__).resolve().parents[2]
CORPUS = yaml.safe_load((Path(__file__).parents[1] / "malformed" / "runs.yaml").read_text())["cases"]


def test_the_corpus_is_large_and_named_uniquely():
    names = [case["name"] for case in CORPUS]
    assert len(names) >= 20 and len(set(names)) == len(names)


@pytest.mark.parametrize("case", CORPUS, ids=[case["name"] for case in CORPUS])
def test_malformed_run_fails_before_the_queue(case, tmp_path, capfd):
    folder = tmp_path / case["name"]
    folder.mkdir()

    def fill(text: str) -> str:
        return text.replace("{case}", str(folder)).replace("{repo}", str(REPO))

    for name, content in case.get("files", {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(fill(content) if isinstance(content, str) else json.dumps(content))
    for name, content in case.get("latin1_files", {}).items():   # a file that is not UTF-8
        (folder / name).write_text(content, encoding="latin-1")
    args = [fill(a) for a in case["args"]]
    if args[0] == "run" and not case.get("no_output_dir"):
        args.append(f"logging.output_dir={folder}/runs")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))

    code = main(args)

    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("lwz: error: "), err
    assert "Traceback" not in err[0]
    import re
    assert re.search(case["error"], err[0]), err[0]
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before, "something was written"
