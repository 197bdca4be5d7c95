"""Record-by-record JSON reading (lookright.data.jsonstream), at chunk boundaries too."""

from __future__ import annotations

import json

import pytest

from lookright.data import jsonstream
from lookright.data.jsonstream import BadLine, iter_json_array, iter_json_records
from lookright.data.validate import DataFileError

RECORDS = [
    {"id": 1, "value": 12345678, "text": "a \u00e9 \\" + '"quoted"', "nested": [1, [2, 3]]},
    {"id": 2, "value": -0.5e-3, "text": "", "nested": {"a": None, "b": True}},
    123456789,
    "a string",
    [],
]


@pytest.fixture(params=[3, 7, 1 << 20], ids=["chunk3", "chunk7", "chunk1M"])
def chunk(request, monkeypatch):
    """Tiny chunks put numbers, strings and objects across the buffer's boundaries."""
    monkeypatch.setattr(jsonstream, "CHUNK_CHARS", request.param)
    return request.param


def test_a_json_list_is_read_element_by_element(tmp_path, chunk):
    path = tmp_path / "list.json"
    path.write_text(json.dumps(RECORDS, indent=1))
    assert list(iter_json_array(path)) == RECORDS
    assert list(iter_json_records(path)) == list(enumerate(RECORDS))
    (tmp_path / "empty.json").write_text(" [ ] ")
    assert list(iter_json_array(tmp_path / "empty.json")) == []


def test_one_member_of_the_top_level_object(tmp_path, chunk):
    doc = {
        "info": {"x": [1, 2]},
        "images": RECORDS[:2],
        "annotations": [{"a": k} for k in range(5)],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(doc))
    assert list(iter_json_array(path, "annotations")) == doc["annotations"]
    assert list(iter_json_array(path, "images")) == doc["images"]
    with pytest.raises(DataFileError, match="no 'categories' list in the top-level object"):
        list(iter_json_array(path, "categories"))
    with pytest.raises(DataFileError, match="'info' is a dict, expected a list"):
        list(iter_json_array(path, "info"))


def test_syntax_errors_name_file_line_and_column(tmp_path, chunk):
    path = tmp_path / "broken.json"
    path.write_text('[\n {"a": 1},\n {"b": 2,,}\n]\n')
    items = iter_json_array(path)
    assert next(items) == {"a": 1}
    with pytest.raises(DataFileError, match=r"broken\.json: line 3, column 10: not valid JSON"):
        next(items)
    (tmp_path / "dict.json").write_text('{"a": 1}')
    with pytest.raises(DataFileError, match="top level is a dict, expected a JSON list"):
        list(iter_json_array(tmp_path / "dict.json"))
    (tmp_path / "blank.json").write_text("  \n")
    with pytest.raises(DataFileError, match="file is empty"):
        list(iter_json_array(tmp_path / "blank.json"))
    with pytest.raises(FileNotFoundError, match="nope.json"):
        list(iter_json_array(tmp_path / "nope.json"))


def test_json_lines_keep_going_past_a_bad_line(tmp_path):
    path = tmp_path / "pope.json"
    path.write_text('{"q": 1}\n\n{not json\n{"q": 2}\n')
    rows = list(iter_json_records(path))
    assert [r[0] for r in rows] == [0, 2, 3]
    assert rows[0][1] == {"q": 1} and rows[2][1] == {"q": 2}
    assert isinstance(rows[1][1], BadLine) and rows[1][1].text == "{not json"
    (tmp_path / "bad.json").write_text("nope\nnever\n")
    with pytest.raises(DataFileError, match=r"bad\.json: line 1: not valid JSON"):
        list(iter_json_records(tmp_path / "bad.json"))
