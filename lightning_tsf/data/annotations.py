"""Annotation formats: Kinetics-style CSV, Something-Something v2 JSON, folder-per-class trees.

Each reader returns a list of :class:`VideoRecord` (absolute path, integer label) plus the class
names, with paths resolved relative to a data root, so the same annotation files work against a
prepared (re-encoded) copy of the dataset under another root.

Paths stay inside the dataset: every annotated video path and class folder must resolve (``..``
and symlinks followed) inside the root it is relative to (``data_root``, or ``data_root /
video_dir``); anything else is an :class:`AnnotationError` naming the file and line, unless the
caller opts in with ``allow_outside=True`` (``data.annotations.allow_outside_root``,
``--allow-outside-root``).
A shared annotation file then cannot make a run read, train on or copy files elsewhere.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from lightning_tsf.data.containment import outside_root

FORMATS = ("kinetics", "ssv2", "folder")
# Every video file suffix recognised in folders (datasets, prepare, inference on files).
VIDEO_EXTENSIONS = (
    ".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv"
)  # fmt: skip

# Default split file names per format (train, val, test). The official TimeSformer tests SSv2 on
# the validation set; the folder format uses split sub-folders.
DEFAULT_SPLITS: dict[str, tuple[str, str, str]] = {
    "kinetics": ("train.csv", "val.csv", "test.csv"),
    "ssv2": ("train.json", "validation.json", "validation.json"),
    "folder": ("train", "val", "test"),
}
DEFAULT_CLASS_FILES: dict[str, str | None] = {
    "kinetics": "classnames.txt",
    "ssv2": "labels.json",
    "folder": None,
}


@dataclass(frozen=True)
class VideoRecord:
    """One annotated video: absolute ``path`` and integer ``label`` (-1 when unlabelled)."""

    path: str
    label: int


class AnnotationError(ValueError):
    """An annotation file that cannot be used as written; the message names file and line."""


# Label-column names that mark the first line of a ``path label`` file as a header.
HEADER_LABELS = {"label", "labels", "class", "class_name", "classname", "category", "target"}


def check_inside(
    path: str | Path,
    root: str | Path,
    where: str,
    allow_outside: bool = False,
    seen: dict[str, str] | None = None,
) -> None:
    """Raise :class:`AnnotationError` (naming ``where``: file and line) when ``path`` resolves,
    ``..`` and symlinks followed, outside ``root`` (:func:`~.containment.outside_root`);
    nothing with ``allow_outside``. ``seen``: the caller's resolved folders for one split."""
    if not allow_outside and (reason := outside_root(path, root, {} if seen is None else seen)):
        raise AnnotationError(f"{where}: {reason}")


def require(path: Path, what: str) -> Path:
    """Return ``path`` or raise ``FileNotFoundError`` naming it and what it should have been."""
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_text(path: Path) -> str:
    """Text of an annotation file, a UTF-8 byte-order mark dropped (spreadsheet exports write
    one; left in, it becomes part of the first path or class name)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        reason = f"{err.reason} at byte {err.start}"
        raise AnnotationError(f"{path}: not UTF-8 text ({reason})") from None


def read_json(path: Path) -> object:
    """A JSON annotation file (byte-order mark allowed); a syntax error names file and line."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a text file (one per line, in label order) or a JSON ``{name: id}``.

    JSON ids must be the integers 0..K-1, each once; names must be unique (a name listed twice
    would make two labels one class)."""
    path = require(Path(path), "class-name file")
    if path.suffix == ".json":
        entries = _class_ids(path)
    else:
        lines = enumerate(read_text(path).splitlines(), start=1)
        entries = [(f"{path}:{n}", line.strip()) for n, line in lines if line.strip()]
    first: dict[str, str] = {}
    for where, name in entries:
        if name in first:
            raise AnnotationError(f"{where}: class name {name!r} is listed twice ({first[name]})")
        first[name] = where
    return [name for _, name in entries]


def _class_ids(path: Path) -> list[tuple[str, str]]:
    """``(where, name)`` in id order from a JSON ``{name: id}`` with ids 0..K-1, each once."""
    mapping = read_json(path)
    if not isinstance(mapping, dict):
        kind = type(mapping).__name__
        raise AnnotationError(f"{path}: expected a JSON object {{name: id}}, got {kind}")
    by_id: dict[int, str] = {}
    for name, idx in mapping.items():
        label = _int_or_none(idx)
        if label is None or not 0 <= label < len(mapping):
            raise AnnotationError(
                f"{path}: class {name!r} has id {idx!r}; ids must be 0..{len(mapping) - 1}"
            )
        if label in by_id:
            raise AnnotationError(f"{path}: id {label} is given to {by_id[label]!r} and {name!r}")
        by_id[label] = name
    return [(f"{path}: id {i}", normalize_ssv2_template(str(by_id[i]))) for i in sorted(by_id)]


def _int_or_none(value: object) -> int | None:
    """``value`` as an int when it is one (or a string of one), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _parse_csv_line(line: str) -> tuple[str, str]:
    line = line.strip()
    sep = "," if "," in line else None
    parts = line.rsplit(sep, 1)
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise ValueError(f"expected 'path label', got {line!r}")
    return parts[0].strip(), parts[1].strip()


UNLABELLED_HINT = (
    "train, val and test entries need a label (unlabelled entries are only for predict_split)"
)


def read_kinetics_csv(
    csv_path: str | Path,
    root: str | Path,
    class_names: list[str] | None = None,
    labelled: bool = False,
    allow_outside: bool = False,
) -> list[VideoRecord]:
    """Kinetics-style ``path label`` lines (space- or comma-separated), paths relative to ``root``.

    A path that resolves outside ``root`` is an error (:func:`check_inside`) unless
    ``allow_outside``.

    A label is an integer (-1: unlabelled, refused when ``labelled``) or, when ``class_names``
    is given, a class name; with ``class_names`` an integer must be below their count. A
    byte-order mark, CRLF line ends, surrounding spaces and blank lines are allowed. A first line
    whose label column is a header word (``label``, ``class``, ...) is skipped; any other
    unknown label, a misspelt class name on the first line too, is an :class:`AnnotationError`
    naming the file and line.
    """
    csv_path = require(Path(csv_path), "annotation file")
    root = Path(root)
    names = list(class_names or [])
    by_name = {name: i for i, name in enumerate(names)}
    records = []
    seen: dict[str, str] = {}  # resolved folders
    for n, line in enumerate(read_text(csv_path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{csv_path}:{n}"
        try:
            rel, label = _parse_csv_line(line)
        except ValueError as err:
            raise AnnotationError(f"{where}: {err}") from None
        if label.lstrip("-").isdigit():
            idx = int(label)
            if idx < -1 or (names and idx >= len(names)):
                raise AnnotationError(
                    f"{where}: label {idx} is out of range for {len(names)} classes "
                    f"(0..{len(names) - 1}, or -1 for unlabelled)"
                )
            if idx == -1 and labelled:
                raise AnnotationError(f"{where}: label -1 (unlabelled); {UNLABELLED_HINT}")
        elif label in by_name:
            idx = by_name[label]
        elif not records and label.lower() in HEADER_LABELS:
            continue  # a header line
        else:
            close = difflib.get_close_matches(label, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise AnnotationError(f"{where}: unknown label {label!r}{hint}")
        check_inside(root / rel, root, where, allow_outside, seen)
        records.append(VideoRecord(str(root / rel), idx))
    return records


def normalize_ssv2_template(template: str) -> str:
    """Remove SSv2's placeholder brackets: ``Putting [something] on [a surface]`` → without []."""
    return re.sub(r"\s+", " ", template.replace("[", "").replace("]", "")).strip()


def read_ssv2(
    json_path: str | Path,
    root: str | Path,
    labels_path: str | Path,
    ext: str = ".webm",
    labelled: bool = False,
    allow_outside: bool = False,
) -> list[VideoRecord]:
    """SSv2 entries (``id``, ``template``) labelled through ``labels.json``; videos ``<id><ext>``.

    The file must be a JSON list of objects, each with an ``id``. An entry without a template
    (the unlabelled test set) gets label -1, unless ``labelled``: then it is an error. A template
    not in ``labels.json`` is always an error. Errors name the file and the entry (its index in
    the list and its id).
    """
    json_path = require(Path(json_path), "annotation file")
    entries = read_json(json_path)
    if not isinstance(entries, list):
        raise AnnotationError(
            f"{json_path}: expected a JSON list of entries, got {type(entries).__name__}"
        )
    labels = {name: i for i, name in enumerate(read_class_names(labels_path))}
    root = Path(root)
    records = []
    seen: dict[str, str] = {}  # resolved folders
    for i, entry in enumerate(entries):
        where = f"{json_path}: entry [{i}]"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: expected an object with 'id' and 'template', got "
                                  f"{type(entry).__name__}")  # fmt: skip
        vid = entry.get("id")
        if isinstance(vid, bool) or not isinstance(vid, (str, int)) or not str(vid).strip():
            got = "no 'id'" if vid is None else f"'id' is {vid!r}"
            raise AnnotationError(f"{where}: {got}; expected the video's id (a string or integer)")
        vid = str(vid).strip()
        where = f"{where} (id {vid!r})"
        template = entry.get("template")
        label = -1
        if template is None:
            if labelled:
                raise AnnotationError(f"{where}: no 'template'; {UNLABELLED_HINT}")
        elif not isinstance(template, str):
            raise AnnotationError(f"{where}: 'template' is {template!r}; expected a string")
        else:
            key = normalize_ssv2_template(template)
            if key not in labels:
                close = difflib.get_close_matches(key, list(labels), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise AnnotationError(f"{where}: template {key!r} not in {labels_path}{hint}")
            label = labels[key]
        check_inside(root / f"{vid}{ext}", root, where, allow_outside, seen)
        records.append(VideoRecord(str(root / f"{vid}{ext}"), label))
    return records


def folder_classes(root: str | Path) -> list[str]:
    """Sorted names of the class sub-folders of ``root``."""
    root = require(Path(root), "video folder")
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def read_folder(
    root: str | Path,
    class_names: list[str] | None = None,
    allow_outside: bool = False,
    class_file: str | Path | None = None,
) -> list[VideoRecord]:
    """Videos in a ``root/<class>/<video>`` tree, labelled by the sorted class-folder order.

    Each class folder (a name from ``class_file`` like ``../x`` too) and each video (a symlink
    too) must resolve inside ``root`` (:func:`check_inside`) unless ``allow_outside``."""
    root = Path(root)
    names = class_names if class_names is not None else folder_classes(root)
    records: list[VideoRecord] = []
    seen: dict[str, str] = {}  # resolved folders
    for label, name in enumerate(names):
        folder = root / name
        where = f"{class_file}: class {label} {name!r}" if class_file else f"{root}: {name!r}"
        check_inside(folder, root, where, allow_outside, seen)
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
                check_inside(path, root, f"{root}: {path.relative_to(root)}", allow_outside,
                             seen)  # fmt: skip
                records.append(VideoRecord(str(path), label))
    return records


FOLDER_LAYOUT = "data_root/{train,val,test}/<class>/<video>"


def split_folder(root: Path, split: str) -> Path:
    """The tree of ``split``: ``root/<split>``, which must exist. (Using ``root`` itself for
    every split would put the same videos in training and test.)"""
    folder = root / split
    if not folder.is_dir():
        raise AnnotationError(
            f"folder dataset: {folder} is not a folder. Expected one folder per split: "
            f"{FOLDER_LAYOUT} (or name other split folders with train_split/val_split/test_split)"
        )
    return folder


def load_class_names(
    format: str, root: str | Path, class_names_file: str | None, train_split: str
) -> list[str]:
    """Class names for a dataset, read cheaply from label files (no video is opened).

    Kinetics without a class-name file gets names ``"0".."K-1"`` with K = 1 + the largest label
    in the training split.
    """
    root = require(Path(root), "data_root")
    if format == "folder":
        if class_names_file:
            return read_class_names(root / class_names_file)
        return folder_classes(split_folder(root, train_split))
    if format == "ssv2":
        return read_class_names(root / (class_names_file or "labels.json"))
    if format == "kinetics":
        if class_names_file and (root / class_names_file).exists():
            return read_class_names(root / class_names_file)
        if class_names_file and class_names_file != DEFAULT_CLASS_FILES["kinetics"]:
            require(root / class_names_file, "class-name file")
        records = read_kinetics_csv(root / train_split, root, labelled=True)
        return [str(i) for i in range(1 + max((r.label for r in records), default=-1))]
    raise ValueError(f"unknown annotation format {format!r}; expected one of {FORMATS}")


def load_split(
    format: str,
    root: str | Path,
    split: str,
    class_names: list[str],
    class_names_file: str | None = None,
    video_dir: str = "",
    video_ext: str = ".webm",
    labelled: bool = True,
    allow_outside: bool = False,
) -> list[VideoRecord]:
    """Records of one split file (or split folder) of a dataset under ``root``.

    ``labelled``: every entry must have a label (training, validation and test, which score
    against it); ``False`` allows unlabelled entries (label -1), for prediction only.
    ``allow_outside``: accept video paths and class folders that resolve outside ``root``
    (and ``video_dir``); by default each is an :class:`AnnotationError`.
    """
    root = require(Path(root), "data_root")
    videos = root / video_dir
    if format == "kinetics":
        return read_kinetics_csv(root / split, videos, class_names, labelled=labelled,
                                 allow_outside=allow_outside)  # fmt: skip
    if format == "ssv2":
        labels = root / (class_names_file or "labels.json")
        return read_ssv2(root / split, videos, labels, video_ext, labelled=labelled,
                         allow_outside=allow_outside)  # fmt: skip
    if format == "folder":
        class_file = root / class_names_file if class_names_file else None
        return read_folder(split_folder(root, split), class_names, allow_outside, class_file)
    raise ValueError(f"unknown annotation format {format!r}; expected one of {FORMATS}")
