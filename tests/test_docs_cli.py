"""The docs quote real commands: every ``tsf`` command and every ``--option`` in README.md and
docs/*.md exists in that command's ``--help`` (the real help text, asked once per command, in
this process). LightningCLI commands (``fit``/``validate``/``test``/``predict``) list their
``--data.*``/``--model.*``/``--trainer.*`` keys there; a key inside a class-typed option
(``--model.net.init_args.depth``) is looked up in that class's help
(``--model.net.help CLASS``)."""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import re
import typing
from pathlib import Path

import jsonargparse

from lightning_tsf.cli import ALIASES, COMMANDS
from lightning_tsf.cli import main as tsf

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LIGHTNING = ("fit", "validate", "test", "predict")
FORWARDS_TO_FIT = {"bench-data"}  # "every other option goes to the tsf fit parser"
# Class-typed options: the classes whose init arguments the docs set through them.
CLASS_OPTIONS = {
    "--model.net": ("lightning_tsf.models.TimeSformer",),
    "--trainer.logger": (
        "pytorch_lightning.loggers.WandbLogger",
        "pytorch_lightning.loggers.CSVLogger",
    ),
}
# Options of other programs quoted in the docs (pip, sbatch/srun, benchmark scripts).
NOT_TSF = {"--cpus-per-task"}  # SLURM's (srun, sbatch), quoted in prose
TSF = re.compile(r"(?<!\S)(\S*bin/)?tsf(?=\s|$)")  # tsf, .venv/bin/tsf
OPTION = re.compile(r"--[a-z][a-z0-9_.\-]*")


def _run_help(argv: tuple[str, ...]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = tsf(list(argv))
        except SystemExit as exit_:  # argparse and LightningCLI exit after the help
            code = exit_.code
    assert code == 0, f"tsf {' '.join(argv)} exited {code}"
    return out.getvalue()


@functools.cache
def help_text(*argv: str) -> str:
    """``tsf ARGV`` (a ``--help`` or ``--X.help CLASS`` call) printed text, once per argv."""
    return _run_help(argv)


def _listed(option: str, text: str) -> bool:
    return re.search(re.escape(option) + r"(?=[\s=\]\[,]|$)", text) is not None


def _subcommand(command: str, words: list[str]) -> tuple[str, ...]:
    """``(command,)``, or ``(command, sub)`` when the command takes subcommands
    (``tsf weights download``) and the first word names one."""
    choices = re.search(r"\{([a-z,\-]+)\}", help_text(command, "--help"))
    if choices and words and words[0] in choices.group(1).split(","):
        return command, words[0]
    return (command,)


def _exists(command: tuple[str, ...], option: str) -> bool:
    """``option`` is in the help of ``command`` (or of the class it sets, or of ``tsf fit``
    for a command that forwards the fit options)."""
    option = option.split("=")[0].rstrip("+")
    if _listed(option, help_text(*command, "--help")):
        return True
    name = command[0]
    fit_like = name in LIGHTNING or name in FORWARDS_TO_FIT
    lightning = name if name in LIGHTNING else "fit"
    if not fit_like:
        return False
    if _listed(option, help_text(lightning, "--help")):
        return True
    for prefix, classes in CLASS_OPTIONS.items():
        if option.startswith(prefix + "."):
            key = option[len(prefix) + 1 :].removeprefix("init_args.")
            return any(_in_class(prefix, c, key) for c in classes)
    return False


def _in_class(prefix: str, class_path: str, key: str) -> bool:
    """``key`` is an argument of ``class_path`` (``tsf fit PREFIX.help CLASS``), or a field of
    a dataclass-typed argument (``tokens.merge_r``: the help of that argument's type)."""
    text = help_text("fit", f"{prefix}.help", class_path)
    if _listed(f"{prefix}.{key}", text):
        return True
    attr, _, rest = key.partition(".")
    if not rest or not _listed(f"{prefix}.{attr}.help", text):
        return False
    return _listed(f"--{attr}.{rest}", argument_type_help(class_path, attr))


@functools.cache
def argument_type_help(class_path: str, attr: str) -> str:
    """jsonargparse's help of the (dataclass) type of constructor argument ``attr`` of
    ``class_path``, its fields as ``--attr.field``; jsonargparse shows it only as a flag."""
    module, name = class_path.rsplit(".", 1)
    hint = typing.get_type_hints(getattr(importlib.import_module(module), name).__init__)[attr]
    kind = next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))
    parser = jsonargparse.ArgumentParser()
    parser.add_class_arguments(kind, attr)
    return parser.format_help()


def _units(text: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every code line (continuations joined) and every inline code span
    (a span may run over a line break within its paragraph)."""
    units, fenced, held, start, para = [], False, "", 0, []
    for n, line in enumerate([*text.splitlines(), ""], 1):
        if line.strip().startswith("```") or not line.strip():
            joined = " ".join(t for _, t in para)
            starts = [(sum(len(t) + 1 for _, t in para[:k]), m) for k, (m, _) in enumerate(para)]
            for span in re.finditer(r"`([^`]+)`", joined):
                at = max(m for offset, m in starts if offset <= span.start())
                units.append((at, span.group(1)))
            para = []
            fenced ^= line.strip().startswith("```")
        elif fenced:
            held, start = (held + " " + line.strip(), start) if held else (line.strip(), n)
            if held.endswith("\\"):
                held = held[:-1]
                continue
            units.append((start, held))
            held = ""
        else:
            para.append((n, line))
    return units


def quoted(docs: list[Path]) -> list[tuple[str, tuple[str, ...] | None, str | None]]:
    """``(where, command, option)`` for every quoted ``tsf`` command (option None) and option;
    command None for an option quoted on its own (checked against every command's help)."""
    found = []
    for doc in docs:
        ours = True  # options quoted on their own after another program's command line are its
        for line, unit in _units(doc.read_text()):
            where = f"{doc.name}:{line}"
            for part in re.split(r"&&|\|\||(?<!\\)\||;", unit):
                if re.match(r"\s*(python3?|pip|sbatch|srun)\b", part):
                    ours = False
                elif TSF.search(part):
                    ours = True
                if ours:
                    found += _in_part(where, part)
    return found


def _in_part(where: str, part: str) -> list[tuple[str, tuple[str, ...] | None, str | None]]:
    words = [w.strip("[](),'\"") for w in part.split()]
    options = [m.group(0) for w in words if "*" not in w for m in [OPTION.match(w)] if m]
    at = next((i for i, w in enumerate(words) if TSF.fullmatch(w)), None)
    if at is None:  # options on their own
        return [(where, None, o) for o in options if o not in NOT_TSF]
    if at + 1 >= len(words) or words[at + 1].startswith("-"):
        return []  # tsf --help
    found = []
    for name in words[at + 1].split("/"):  # tsf fit/validate/test/predict
        if name.startswith("<"):
            continue  # tsf <command> --help
        name = ALIASES.get(name, name)
        if name not in COMMANDS:
            found.append((where, (name,), None))
            continue
        command = _subcommand(name, words[at + 2 :])
        found += [(where, command, None)] + [(where, command, o) for o in options]
    return found


def problems(items: list[tuple[str, tuple[str, ...] | None, str | None]]) -> list[str]:
    """One line per quoted command or option that ``tsf --help`` does not know."""
    wrong = []
    for where, command, option in items:
        if command is not None and command[0] not in COMMANDS:
            wrong.append(f"{where}: no command tsf {command[0]}")
        elif command is not None and option is not None and not _exists(command, option):
            wrong.append(f"{where}: tsf {' '.join(command)} has no {option}")
        elif command is None and not any(_exists((c,), option) for c in COMMANDS):
            wrong.append(f"{where}: no tsf command has {option}")
    return wrong


def test_docs_quote_real_commands_and_options() -> None:
    items = quoted(DOCS)
    assert len({c for _, c, _ in items if c}) >= len(COMMANDS)  # the parser found them all
    wrong = problems(items)
    assert not wrong, "quoted in the docs, unknown to tsf --help:\n" + "\n".join(wrong)


def test_the_check_catches_a_wrong_quote(tmp_path: Path) -> None:
    """The checker itself: a misspelt option, a misspelt key of a class-typed option, an
    option no command has and a command that does not exist are reported; real ones pass."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        "Run `tsf prepare SRC DST --short-side 256`, `tsf weights download --from DIR` or\n"
        "`--num-spatial-crops` and `--data.batch_size`; never `--crops-spatial`.\n\n```bash\n"
        "tsf fit --config x.yaml --data.batch_size=2 --model.net.init_args.depth=2 \\\n"
        "  --model.net.init_args.depht=2 --data.bach_size=2  # --trainer.*\n"
        "tsf prepare SRC DST --short-sides 256 && tsf shardz SRC OUT\n```\n"
    )
    assert problems(quoted([doc])) == [
        "doc.md:2: no tsf command has --crops-spatial",
        "doc.md:5: tsf fit has no --model.net.init_args.depht",
        "doc.md:5: tsf fit has no --data.bach_size",
        "doc.md:7: tsf prepare has no --short-sides",
        "doc.md:7: no command tsf shardz",
    ]
