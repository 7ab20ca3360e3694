"""Annotation files read strictly: what editors and spreadsheets write (byte-order mark, CRLF,
trailing spaces, blank lines) is read correctly; an entry that cannot be read is an
:class:`AnnotationError` naming the file and the entry (CSV line; JSON entry index and id)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_tsf.data.annotations import (
    AnnotationError,
    load_class_names,
    load_split,
    read_class_names,
    read_kinetics_csv,
    read_ssv2,
)

BOM = "\ufeff"
LABELS = {"Pushing something from left to right": "0", "Putting something on a surface": "1"}
PUT = "Putting [something] on [a surface]"


def write(path: Path, text: str, newline: str = "\n") -> Path:
    """Write ``text`` as UTF-8 with the given line ends (no translation)."""
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def test_kinetics_bom_crlf_spaces_blank_lines(tmp_path: Path) -> None:
    csv = write(tmp_path / "train.csv", f"{BOM}v/b1.mp4 0\n  v/b2.mp4\t1  \n\n   \nv/b3.mp4,1 \n",
                newline="\r\n")  # fmt: skip
    records = read_kinetics_csv(csv, tmp_path, ["a", "b"], labelled=True)
    assert [(Path(r.path).relative_to(tmp_path).as_posix(), r.label) for r in records] == [
        ("v/b1.mp4", 0), ("v/b2.mp4", 1), ("v/b3.mp4", 1)
    ]  # fmt: skip


def test_class_names_bom_crlf_and_json_bom(tmp_path: Path) -> None:
    txt = write(tmp_path / "classnames.txt", f"{BOM}left \n\nright\n", newline="\r\n")
    assert read_class_names(txt) == ["left", "right"]
    labels = write(tmp_path / "labels.json", BOM + json.dumps({"b": 1, "a [x]": "0"}))
    assert read_class_names(labels) == ["a x", "b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v/a.mp4 0\nv/b.mp4\n", ":2: expected 'path label', got 'v/b.mp4'"),
        ("v/a.mp4 0\nv/b.mp4 ,\n", ":2: expected 'path label'"),
        ("v/a.mp4 0\nv/b.mp4 2\n", ":2: label 2 is out of range for 2 classes"),
        ("v/a.mp4 -1\n", ":1: label -1 (unlabelled); train, val and test entries need a label"),
        ("v/a.mp4 lefty\n", ":1: unknown label 'lefty'; did you mean 'left'?"),
    ],
)
def test_kinetics_bad_rows(tmp_path: Path, text: str, message: str) -> None:
    csv = write(tmp_path / "train.csv", text)
    with pytest.raises(AnnotationError) as err:
        read_kinetics_csv(csv, tmp_path, ["left", "right"], labelled=True)
    assert str(err.value).startswith(f"{csv}{message}")


def test_kinetics_unlabelled_allowed_when_not_labelled(tmp_path: Path) -> None:
    csv = write(tmp_path / "test.csv", "v/a.mp4 -1\n")
    assert [r.label for r in read_kinetics_csv(csv, tmp_path, ["a"])] == [-1]


def test_not_utf8(tmp_path: Path) -> None:
    csv = tmp_path / "train.csv"
    csv.write_bytes("v/caf\xe9.mp4 0\n".encode("latin-1"))
    with pytest.raises(AnnotationError, match=r"train.csv: not UTF-8 text"):
        read_kinetics_csv(csv, tmp_path)


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    return write(tmp_path / "labels.json", json.dumps(LABELS))


def test_ssv2_bom_crlf_spaces_and_integer_ids(tmp_path: Path, labels: Path) -> None:
    entries = [{"id": 7, "template": PUT}, {"id": " 8 ", "template": f" {PUT}  "}]
    path = write(tmp_path / "train.json", BOM + json.dumps(entries, indent=1), newline="\r\n")
    records = read_ssv2(path, tmp_path, labels, labelled=True)
    assert [(Path(r.path).name, r.label) for r in records] == [("7.webm", 1), ("8.webm", 1)]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"id": "1"}, ": expected a JSON list of entries, got dict"),
        ([{"id": "1", "template": PUT}, "2"], ": entry [1]: expected an object"),
        ([{"id": "1", "template": PUT}, {"template": PUT}], ": entry [1]: no 'id'"),
        ([{"id": None, "template": PUT}], ": entry [0]: no 'id'"),
        ([{"id": "", "template": PUT}], ": entry [0]: 'id' is ''"),
        ([{"id": ["1"], "template": PUT}], ": entry [0]: 'id' is ['1']"),
        ([{"id": "1", "template": PUT}, {"id": "2"}],
         ": entry [1] (id '2'): no 'template'; train, val and test entries need a label"),
        ([{"id": "3", "template": 4}], ": entry [0] (id '3'): 'template' is 4"),
        ([{"id": "3", "template": "Putting [something] on a table"}],
         ": entry [0] (id '3'): template 'Putting something on a table' not in "),
    ],
)  # fmt: skip
def test_ssv2_bad_entries(tmp_path: Path, labels: Path, entries: object, message: str) -> None:
    path = write(tmp_path / "train.json", json.dumps(entries))
    with pytest.raises(AnnotationError) as err:
        read_ssv2(path, tmp_path, labels, labelled=True)
    assert str(err.value).startswith(f"{path}{message}")


def test_ssv2_unlabelled_only_when_allowed(tmp_path: Path, labels: Path) -> None:
    path = write(tmp_path / "test.json", json.dumps([{"id": "5"}, {"id": "6", "template": PUT}]))
    assert [r.label for r in read_ssv2(path, tmp_path, labels)] == [-1, 1]
    bad = write(tmp_path / "bad.json", json.dumps([{"id": "5", "template": "Nothing"}]))
    with pytest.raises(AnnotationError, match="template 'Nothing' not in"):
        read_ssv2(bad, tmp_path, labels)  # a wrong template is wrong even for prediction
    with pytest.raises(AnnotationError, match=r"entry \[0\] \(id '5'\): no 'template'"):
        load_split("ssv2", tmp_path, "test.json", [])  # labelled by default
    assert len(load_split("ssv2", tmp_path, "test.json", [], labelled=False)) == 2


def test_json_syntax_error_names_line(tmp_path: Path, labels: Path) -> None:
    path = write(tmp_path / "train.json", '[\n {"id": "1",,}\n]')
    with pytest.raises(AnnotationError, match=rf"^{path}:2: not valid JSON"):
        read_ssv2(path, tmp_path, labels)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("labels.json", '["a", "b"]', ": expected a JSON object {name: id}, got list"),
        ("labels.json", '{"a": 0, "b": 2}', ": class 'b' has id 2; ids must be 0..1"),
        ("labels.json", '{"a": 0, "b": "x"}', ": class 'b' has id 'x'"),
        ("labels.json", '{"a": 0, "b": "0"}', ": id 0 is given to 'a' and 'b'"),
        ("labels.json", '{"[a]": 0, "a": 1}', ": id 1: class name 'a' is listed twice"),
        ("classnames.txt", "a\nb\na \n", ":3: class name 'a' is listed twice"),
    ],
)
def test_bad_class_name_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(AnnotationError) as err:
        read_class_names(path)
    assert str(err.value).startswith(f"{path}{message}")


def test_kinetics_class_count_from_labelled_training_split(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", "v/a.mp4 2\nv/b.mp4 -1\n")
    with pytest.raises(AnnotationError, match=r"train.csv:2: label -1 \(unlabelled\)"):
        load_class_names("kinetics", tmp_path, None, "train.csv")
