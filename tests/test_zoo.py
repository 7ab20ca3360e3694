"""The model zoo against a real HTTP server on 127.0.0.1 serving files made here: download
with verification, resume after a cut connection (HTTP Range), a corrupt file rejected, the
offline error, and ``zoo:NAME`` in an experiment. No test touches the internet."""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml

from lightning_tsf.cli import main as tsf
from lightning_tsf.commands.lightning import cli_main
from lightning_tsf.models import create_model, zoo

ROOT = Path(__file__).parents[1]


class Server:
    """Serves ``files`` (name -> bytes) with Range support; ``cut`` names files whose first
    full-length response is cut off halfway. Records each request's path and Range header.

    Also the HF hub's download route, as ``huggingface_hub`` uses it (a HEAD, then a GET of
    ``/{repo}/resolve/{revision}/{filename}``, answered with ETag = sha256, X-Repo-Commit and
    Content-Length) for the files named ``{repo}/{filename}``; recorded as ``("HEAD name",
    None)`` and ``(name, Range)``."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                self.answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self.answer(body=True)

            def answer(self, body: bool) -> None:
                name = self.path.split("?")[0].lstrip("/")
                parts = name.split("/")
                hub = len(parts) == 5 and parts[2] == "resolve"
                if hub:
                    name = f"{parts[0]}/{parts[1]}/{parts[4]}"
                rng = self.headers.get("Range")
                server.requests.append((name, rng) if body else (f"HEAD {name}", None))
                if name not in server.files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.files[name]
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if hub:
                    self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                    self.send_header("X-Repo-Commit", "c0ffee" * 6 + "c0ff")
                self.end_headers()
                if not body:
                    return
                if name in server.cut and not rng:
                    server.cut.discard(name)
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: connections are refused from now on."""
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()


def official_file(num_classes: int = 5) -> bytes:
    """An official-layout checkpoint of the tiny preset (model_state, ``model.`` prefix)."""
    import io

    torch.manual_seed(0)
    state = create_model("timesformer_tiny", num_classes=num_classes).state_dict()
    buffer = io.BytesIO()
    torch.save({"model_state": {f"model.{k}": v for k, v in state.items()}, "epoch": 15}, buffer)
    return buffer.getvalue()


def tiny_entry(server: Server, name: str = "tiny") -> zoo.ZooEntry:
    return zoo.ZooEntry(name, f"{name}.pyth", f"{server.url}/{name}.pyth", "test",
                        "timesformer_tiny", 4, 5, "official", accuracy=(50.0, None))  # fmt: skip


def test_download_verifies_and_caches(server: Server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    server.files["tiny.pyth"] = official_file()
    item = tiny_entry(server)
    path = zoo.download(item, progress=False)
    assert path == tmp_path / "cache" / "tiny.pyth" and path.read_bytes() == server.files[
        "tiny.pyth"
    ]
    assert zoo.download(item, progress=False) == path and len(server.requests) == 1  # cached
    known = hashlib.sha256(server.files["tiny.pyth"]).hexdigest()  # the hash, computed here
    zoo.verify(replace(item, sha256=known, name="hashed"), path)
    with pytest.raises(zoo.ZooError, match="sha256"):
        zoo.verify(replace(item, sha256="0" * 64), path)


def test_resume_after_a_cut_connection(server: Server, tmp_path: Path) -> None:
    server.files["tiny.pyth"] = data = official_file()
    server.cut.add("tiny.pyth")
    path = zoo.download(tiny_entry(server), tmp_path, progress=False)
    assert path.read_bytes() == data
    assert server.requests == [("tiny.pyth", None), ("tiny.pyth", f"bytes={len(data) // 2}-")]
    assert not list(tmp_path.glob("*.part"))


def test_corrupt_or_wrong_file_is_rejected(server: Server, tmp_path: Path) -> None:
    server.files["tiny.pyth"] = official_file(num_classes=7)  # another head: wrong model
    with pytest.raises(zoo.ZooError, match="expected 5"):
        zoo.download(tiny_entry(server), tmp_path, progress=False)
    server.files["bad.pyth"] = b"\x00" * 4096
    with pytest.raises(zoo.ZooError, match="does not load"):
        zoo.download(tiny_entry(server, "bad"), tmp_path, progress=False)
    kept = [p.name for p in tmp_path.iterdir() if p.name != ".zoo.download.lock"]
    assert not kept  # nothing kept: no final file, no .part, no record


def test_offline_error_names_url_and_manual_step(server: Server, tmp_path: Path) -> None:
    item = tiny_entry(server)
    server.httpd.shutdown()
    server.httpd.server_close()
    with pytest.raises(zoo.ZooError) as err:
        zoo.download(item, tmp_path, progress=False, retries=1, timeout=2)
    message = str(err.value)
    assert item.url in message and "tsf weights download tiny" in message
    assert zoo.CACHE_ENV in message


def test_zoo_name_in_an_experiment(server: Server, tiny_synthetic: Path, tmp_path: Path,
                                   monkeypatch, capsys) -> None:  # fmt: skip
    """``model.pretrained: zoo:NAME`` downloads on first use and fine-tunes; offline and
    not cached, ``tsf fit`` stops with exit 2 and the URL."""
    monkeypatch.setattr(sys, "argv", ["tsf"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    server.files["tiny.pyth"] = official_file()
    monkeypatch.setitem(zoo.ZOO, "tiny", tiny_entry(server))
    net = "--model.net.init_args."
    args = ["--config", str(ROOT / "experiments" / "finetune_official_k400.yaml"),
            f"--data.data_root={tiny_synthetic}", "--data.format=kinetics",
            "--data.annotations.video_dir=", "--data.clips.num_frames=4",
            "--data.clips.crop_size=32", "--data.clips.train_scale=[32, 36]",
            "--data.batch_size=2", "--data.num_workers=0", f"{net}patch_size=8",
            f"{net}embed_dim=64", f"{net}depth=2", f"{net}num_heads=4",
            "--model.pretrained=zoo:tiny", "--trainer.accelerator=cpu", "--trainer.devices=1",
            f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false"]  # fmt: skip
    assert cli_main(["fit", *args]) == 0
    assert (tmp_path / "cache" / "tiny.pyth").is_file()  # downloaded on first use

    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "empty"))
    server.httpd.shutdown()
    server.httpd.server_close()
    assert cli_main(["fit", *args]) == 2
    err = capsys.readouterr().err
    assert "could not download tiny" in err and "Traceback" not in err
    assert cli_main(["fit", *args[:-8], "--model.pretrained=zoo:nope"]) == 2
    assert "unknown zoo checkpoint 'nope'" in capsys.readouterr().err


def test_list_and_the_paper_experiments_use_known_names(capsys) -> None:
    assert tsf(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for name, item in zoo.ZOO.items():
        assert f"| {name} |" in out and item.file in out
    assert "| timesformer_k400 | K400 | 8x224 | divided_space_time | 77.9 / 93.2 |" in out
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        pretrained = yaml.safe_load(path.read_text())["model"].get("pretrained")
        if pretrained:
            assert pretrained.startswith("zoo:") and pretrained[4:] in zoo.ZOO, path.name
