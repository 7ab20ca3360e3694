"""The package's shape: layers imported one way only, the ``tsf`` dispatcher, and the package
working when installed without ``-e`` (no paths into the source tree)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_tsf.cli import ALIASES, COMMANDS, usage
from lightning_tsf.cli import main as tsf

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "lightning_tsf"

# Rank of each part of the package: a module may import its own part or lower ranks only.
LAYERS = {
    "models": 0,
    "data": 0,
    "configs": 0,
    "inference": 1,  # checkpoint -> model -> views -> outputs
    "export": 1,  # checkpoint -> ONNX / torch.export file
    "results": 1,  # prediction results and their writers (CSV / JSON / JSONL)
    "train": 2,  # VideoClassifier, optimiser recipes, callbacks
    "viz": 2,  # pictures and the dashboard callbacks
    "predictor": 2,  # Predictor: inference + heatmap/timeline pictures for Python users
    "timeline": 2,  # long videos: windows decoded once, scored, the strip picture
    "commands": 3,
    "cli": 3,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``lightning_tsf`` module imported anywhere in the file (lazy imports too)."""
    name = _module_name(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{name}: use absolute imports"
            found.add(node.module or "")
    return {m for m in found if m.startswith("lightning_tsf.")}


def _part(module: str) -> str:
    return module.split(".")[1]


def _graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f) for f in files}

    def resolve(m: str) -> str:  # ``from lightning_tsf.models import X`` -> the package module
        while m not in modules and "." in m:
            m = m.rsplit(".", 1)[0]
        return m

    return {_module_name(f): {resolve(m) for m in _imports(f)} for f in files}


def test_every_part_has_a_layer() -> None:
    parts = {_part(m) for m in _graph() if m != "lightning_tsf"}
    assert parts <= set(LAYERS), f"parts without a layer: {parts - set(LAYERS)}"


def test_imports_go_down_only() -> None:
    upward = [
        f"{src} imports {dst}"
        for src, deps in _graph().items()
        if src != "lightning_tsf"
        for dst in deps
        if dst != "lightning_tsf" and LAYERS[_part(dst)] > LAYERS[_part(src)]
    ]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_import_circles() -> None:
    graph = _graph()
    # Import cycles between modules, and between parts of the same layer (e.g. train <-> viz).
    part_graph: dict[str, set[str]] = {}
    for src, deps in graph.items():
        for dst in deps:
            if "lightning_tsf" not in (src, dst) and _part(src) != _part(dst):
                part_graph.setdefault(_part(src), set()).add(_part(dst))

    def cycle(g: dict[str, set[str]]) -> list[str] | None:
        state: dict[str, int] = {}

        def visit(node: str, stack: list[str]) -> list[str] | None:
            state[node] = 1
            for nxt in g.get(node, ()):
                if state.get(nxt) == 1:
                    return stack + [node, nxt]
                if nxt not in state and (found := visit(nxt, stack + [node])):
                    return found
            state[node] = 2
            return None

        for n in list(g):
            if n not in state and (found := visit(n, [])):
                return found
        return None

    assert cycle(graph) is None, f"module import circle: {cycle(graph)}"
    assert cycle(part_graph) is None, f"circle between parts: {cycle(part_graph)}"


def test_layer_test_catches_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The checker itself: a data module importing a command is reported."""
    bad = tmp_path / "lightning_tsf" / "data" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from lightning_tsf.commands.demo import main\n")
    (tmp_path / "lightning_tsf" / "commands").mkdir()
    (tmp_path / "lightning_tsf" / "commands" / "demo.py").write_text("main = None\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "lightning_tsf")
    with pytest.raises(AssertionError, match="lightning_tsf.data.bad imports"):
        test_imports_go_down_only()


def test_help_is_aligned_and_names_every_command(capsys: pytest.CaptureFixture) -> None:
    assert tsf(["--help"]) == 0
    out = capsys.readouterr().out
    assert out == usage() + "\n"
    lines = [line for line in out.splitlines() if line.startswith("  ")]
    assert [line.split()[0] for line in lines] == list(COMMANDS)
    starts = {len(line) - len(line[2:].split(None, 1)[1]) for line in lines}  # help column
    assert len(starts) == 1, out
    for line in lines:  # a gap of at least two spaces between name and help
        name = line.split()[0]
        assert line[2 + len(name) : 4 + len(name)] == "  ", line


def test_old_names_still_work(capsys: pytest.CaptureFixture) -> None:
    for old, new in ALIASES.items():
        with pytest.raises(SystemExit) as exit_:
            tsf([old, "--help"])
        assert exit_.value.code == 0
        assert f"tsf {new}" in capsys.readouterr().out
    assert tsf(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err


@pytest.mark.slow
def test_installed_without_editable(tmp_path: Path) -> None:
    """``pip install`` (not ``-e``) into a fresh target; from an empty folder: ``tsf --help``
    and the demo's experiment file load from the installed package."""
    target, empty = tmp_path / "site", tmp_path / "empty"
    empty.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        check=True, cwd=empty, capture_output=True, timeout=300,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "offline"}

    def run(code: str, *args: str) -> str:
        out = subprocess.run([sys.executable, "-c", code, *args], cwd=empty, env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    tsf_code = "import sys; from lightning_tsf.cli import main; sys.exit(main(sys.argv[1:]))"
    where = run("import lightning_tsf; from lightning_tsf.configs import config_path;"
                "print(lightning_tsf.__file__); print(config_path())").split()  # fmt: skip
    assert all(p.startswith(str(target)) for p in where), f"not the installed copy: {where}"
    demo_config = where[1]
    assert demo_config.endswith("demo_synthetic.yaml")
    out = run(tsf_code, "--help")
    assert "predict-files" in out and "demo" in out
    config = run(tsf_code, "fit", "--config", demo_config, "--print_config")
    assert "attention_type: divided_space_time" in config and "crop_size: 32" in config
