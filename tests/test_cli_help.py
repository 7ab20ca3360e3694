"""``tsf X --help``: fast (the import graph: no torch, Lightning, PyAV or W&B is imported to
print any command's help), every option showing its default (or being a flag), descriptions
that are whole sentences; the LightningCLI commands' help cached and rebuilt when its inputs
change."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_tsf import cli

ROOT = Path(__file__).parents[1]
# What a --help must not import: the heavy libraries (seconds each) and the model code.
HEAVY = ("torch", "numpy", "pytorch_lightning", "lightning_fabric", "jsonargparse", "torchmetrics",
         "av",
         "decord", "wandb", "litdata", "matplotlib", "PIL", "sklearn", "einops", "yaml",
         "lightning_tsf.models.timesformer", "lightning_tsf.predictor")  # fmt: skip
CACHED = "usage: tsf (cached help text)\n"
# Every command's --help in one fresh interpreter: after each, the heavy modules it imported.
# The LightningCLI commands' text is put in the cache first (building it takes seconds; the
# cache itself is tested below).
PROBE = """
import contextlib, io, json, sys
from lightning_tsf import cli
HEAVY = {heavy!r}
for name in ("fit", "validate", "test", "predict"):
    path = cli.help_cache_path(name, ["--help"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text({cached!r})
result = {{}}
for argv in [[name, "--help"] for name in cli.COMMANDS] + [["weights", "download", "--help"]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            status = cli.main(argv)
        except SystemExit as done:
            status = done.code
    heavy = sorted(m for m in sys.modules if m in HEAVY)
    result[" ".join(argv[:-1])] = {{"status": status, "help": out.getvalue(), "heavy": heavy}}
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def helps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    cache = tmp_path_factory.mktemp("help_cache")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LIGHTNING_TSF_CACHE": str(cache),
           "COLUMNS": "100"}  # fmt: skip
    code = PROBE.format(heavy=HEAVY, cached=CACHED)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_help_imports_nothing_heavy(helps: dict[str, dict]) -> None:
    assert set(helps) == set(cli.COMMANDS) | {"weights download"}
    for name, got in helps.items():
        assert got["status"] in (0, None), (name, got["help"][-500:])
        assert not got["heavy"], f"tsf {name} --help imported {got['heavy']}"
        assert got["help"].startswith(CACHED if name in ("fit", "validate", "test", "predict")
                                      else "usage: tsf "), name  # fmt: skip


def options(text: str) -> dict[str, tuple[bool, str]]:
    """The options of an argparse help text: ``--name`` -> (takes a value, its help)."""
    found: dict[str, tuple[bool, str]] = {}
    current = None
    for line in text.splitlines():
        head = re.match(r"  (-[\w-]+(?:, -[\w-]+)*)( [^ ].*?)?(?:  +(.*))?$", line)
        if head:
            names = head.group(1).split(", ")
            value = bool(head.group(2)) and not head.group(2).startswith(" ,")
            current = names[-1]
            found[current] = (value, head.group(3) or "")
        elif current and line.startswith("      ") and line.strip():
            value, help_ = found[current]
            found[current] = (value, f"{help_} {line.strip()}")
        elif not line.strip() or not line.startswith(" "):
            current = None
    return found


def required(got: dict) -> str:
    """The usage line's options outside brackets (required ones have no default)."""
    usage = " ".join(got["help"].split("\n\n")[0].split())
    return re.sub(r"\[[^\]]*\]", "", usage) + " "


def test_every_option_shows_its_default_or_is_a_flag(helps: dict[str, dict]) -> None:
    checked = 0
    for name, got in helps.items():
        if name in ("fit", "validate", "test", "predict"):
            continue  # jsonargparse prints "(type: T, default: D)" for every option
        for option, (takes_value, help_) in options(got["help"]).items():
            if option in ("--help", "-h") or not takes_value or f"{option} " in required(got):
                continue
            checked += 1
            assert "default" in help_.lower(), f"tsf {name} {option}: {help_!r}"
    assert checked > 60  # the parser above saw the options


def test_descriptions_are_whole_sentences(helps: dict[str, dict]) -> None:
    for name, got in helps.items():
        if name in ("fit", "validate", "test", "predict"):
            continue
        text = got["help"]
        body = text.split("\n\n")[1] if "\n\n" in text else ""
        if body.startswith(("positional arguments:", "options:")):
            continue  # weights download: a subcommand has no description of its own
        assert body.rstrip().endswith((".", "?", ")")), f"tsf {name}: {body!r}"
    assert "is the data loader fast enough for the model?" in " ".join(
        helps["bench-data"]["help"].split()
    )


def test_lightning_help_is_cached_and_rebuilt_when_its_inputs_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("LIGHTNING_TSF_CACHE", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "100")
    built = []

    def build() -> int:
        built.append(1)
        print("usage: tsf fit [-h] ...")
        raise SystemExit(0)  # as jsonargparse does after printing the help

    assert cli.cached_help("fit", ["--help"], build) == 0
    assert cli.cached_help("fit", ["--help"], build) == 0
    assert capsys.readouterr().out == "usage: tsf fit [-h] ...\n" * 2 and len(built) == 1
    first = cli.help_cache_path("fit", ["--help"])
    assert first.read_text() == "usage: tsf fit [-h] ...\n"
    monkeypatch.setenv("COLUMNS", "60")  # another terminal width: another text
    assert cli.help_cache_path("fit", ["--help"]) != first
    assert cli.cached_help("fit", ["--help"], build) == 0 and len(built) == 2
    assert not first.exists()  # the stale text is removed

    def broken() -> int:
        print("tsf: error: something")
        raise SystemExit(2)

    assert cli.cached_help("test", ["--help"], broken) == 2
    assert not cli.help_cache_path("test", ["--help"]).exists()  # a failure is not kept
