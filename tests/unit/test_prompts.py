import json

import pytest

from lwz.data.prompts import PromptOrder, load_prompts
from lwz.errors import LwzError


def write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(path)


def test_load_copies_range_field(tmp_path):
    f = write(tmp_path / "p.jsonl", [{"q": "写一篇文章", "r": [100, 300]}, {"q": "Write", "r": [0, 0]}])
    rows = load_prompts([f], prompt_field="q", range_field="r")
    assert rows[0]["prompt"] == "写一篇文章" and rows[0]["length_range"] == [100, 300]
    assert rows[1]["length_range"] == [0, 0]


@pytest.mark.parametrize("row, key", [({"prompt": ""}, "prompt"), ({"prompt": "x"}, "length_range"),
                                      ({"prompt": "x", "length_range": [300, 100]}, "length_range")])
def test_bad_rows_name_file_line_and_field(tmp_path, row, key):
    f = write(tmp_path / "p.jsonl", [{"prompt": "ok", "length_range": [1, 2]}, row])
    with pytest.raises(LwzError) as e:
        load_prompts([f])
    assert e.value.where.endswith("p.jsonl:2") and e.value.key == key


def test_order_covers_each_epoch_once_and_is_resumable():
    order = PromptOrder(num_prompts=10, per_step=4, seed=3)
    first_epoch = order.indices(0) + order.indices(1) + order.indices(2)[:2]
    assert sorted(first_epoch) == list(range(10))
    assert order.indices(2) == PromptOrder(10, 4, 3).indices(2)        # a pure function of the step
    assert order.epoch(2) == 0 and order.epoch(3) == 1
    assert order.indices(0) != PromptOrder(10, 4, 4).indices(0)


def test_prompts_too_long_for_the_engine_are_dropped(caplog):
    class Words:
        def encode(self, text):
            return text.split()

    rows = [{"prompt": "short one"}, {"prompt": "a much longer prompt " * 5}]
    from lwz.data.prompts import fitting_prompts

    assert fitting_prompts(rows, Words(), "raw", 5) == rows[:1]
    assert "dropped 1 of 2 prompts" in caplog.text
    with pytest.raises(LwzError):
        fitting_prompts(rows, Words(), "raw", 1)


def test_max_target_keeps_only_prompts_with_short_targets(tmp_path):
    """Rows above data.max_target are left out, before the l_max rule applies to them; none left: an error."""
    f = write(tmp_path / "p.jsonl", [{"prompt": "a", "length_range": [40, 60]}, {"prompt": "b", "length_range": [0, 0]},
                                     {"prompt": "c", "length_range": [200, 400]}])
    rows = load_prompts([f], l_max=300, max_target=100)
    assert [r["prompt"] for r in rows] == ["a", "b"]
    with pytest.raises(LwzError) as e:
        load_prompts([f], l_max=300)
    assert e.value.where.endswith("p.jsonl:3")
    with pytest.raises(LwzError) as e:
        load_prompts([write(tmp_path / "q.jsonl", [{"prompt": "c", "length_range": [200, 400]}])], max_target=100)
    assert e.value.key == "data.max_target"


def test_min_target_and_languages_keep_the_long_english_prompts(tmp_path):
    """data.min_target leaves out ranges starting below it, data.languages rows of other languages (a row
    without `lang` is an error then); none left: an error naming the filter."""
    f = write(tmp_path / "p.jsonl", [{"prompt": "a", "length_range": [300, 500], "lang": "en"},
                                     {"prompt": "b", "length_range": [100, 400], "lang": "en"},
                                     {"prompt": "c", "length_range": [600, 900], "lang": "zh"},
                                     {"prompt": "d", "length_range": [800, 2000], "lang": "en"}])
    rows = load_prompts([f], min_target=300, max_target=1500, languages=["en"])
    assert [r["prompt"] for r in rows] == ["a"]
    assert [r["prompt"] for r in load_prompts([f], languages=["zh"])] == ["c"]
    with pytest.raises(LwzError) as e:
        load_prompts([f], min_target=3000)
    assert e.value.key == "data.min_target" and "no prompt has a target within [3000, any]" in e.value.message
    with pytest.raises(LwzError) as e:
        load_prompts([write(tmp_path / "q.jsonl", [{"prompt": "e", "length_range": [300, 500]}])], languages=["en"])
    assert e.value.key == "lang" and e.value.where.endswith("q.jsonl:1")
