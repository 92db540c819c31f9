"""A folder built beside its target appears whole or not at all (lwz.atomic.new_folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lwz.atomic import new_folder


def test_the_folder_appears_with_its_files_and_nothing_is_left_beside_it(tmp_path: Path) -> None:
    with new_folder(tmp_path / "out") as building:
        (building / "a.txt").write_text("a")
        assert not (tmp_path / "out").exists()
    assert (tmp_path / "out" / "a.txt").read_text() == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_error_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="half way"):
        with new_folder(tmp_path / "out") as building:
            (building / "a.txt").write_text("a")
            raise RuntimeError("half way")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_made_first_by_another_process_is_kept_or_refused(tmp_path: Path) -> None:
    for if_there in ("keep", "fail"):
        final = tmp_path / if_there
        final.mkdir()
        (final / "theirs.txt").write_text("first")
        if if_there == "keep":
            with new_folder(final, if_there="keep") as building:
                (building / "mine.txt").write_text("second")
        else:
            with pytest.raises(FileExistsError, match="already exists"):
                with new_folder(final) as building:
                    (building / "mine.txt").write_text("second")
        assert [p.name for p in final.iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fail", "keep"]
