"""Zoo sources against loopback servers started here: the release link first, the HF hub copy
(``hf_hub_download`` through ``HF_ENDPOINT``) when the release is down, the sha256 recorded in
``zoo.lock.json`` and checked on every later use, and mirrors (``LIGHTNING_TSF_ZOO_URL``,
``tsf weights download --from URL|DIR``). No test touches the internet."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import tiny_hf_model
from test_zoo import Server, official_file

from lightning_tsf.cli import main as tsf
from lightning_tsf.models import create_model, load_checkpoint, zoo

HF_REPO = "org/tiny-hf"
HF_NAME = f"{HF_REPO}/{zoo.HF_FILE}"


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    """(release, hub)."""
    pair = Server(), Server()
    yield pair
    for s in pair:
        s.httpd.shutdown()


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv(zoo.MIRROR_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def hf_file(num_labels: int = 5) -> bytes:
    """HF transformers' state dict of the tiny preset (what the hub copies hold)."""
    buffer = io.BytesIO()
    torch.save(tiny_hf_model(num_labels).state_dict(), buffer)
    return buffer.getvalue()


def hub_entry(release: Server, name: str = "tiny") -> zoo.ZooEntry:
    return zoo.ZooEntry(name, f"{name}.pyth", f"{release.url}/{name}.pyth", "test",
                        "timesformer_tiny", 4, 5, "official", hf=HF_REPO)  # fmt: skip


def lock(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "cache" / zoo.LOCK_JSON).read_text())["files"]


def test_release_first_hub_not_asked(servers, tmp_path: Path, monkeypatch, capsys) -> None:
    release, hub = servers
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    release.files["tiny.pyth"] = data = official_file()
    hub.files[HF_NAME] = hf_file()
    item = hub_entry(release)
    assert [s.name for s in zoo.sources(item)] == ["release", "hf"]
    got = zoo.fetch(item, progress=False)
    assert got == zoo.Fetched(tmp_path / "cache" / "tiny.pyth", "official", "release")
    assert release.requests == [("tiny.pyth", None)] and hub.requests == []
    record = lock(tmp_path)["tiny.pyth"]
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size"] == len(data)
    assert record["source"] == f"release {item.url}"
    assert f"tiny: downloading from release {item.url}" in capsys.readouterr().err
    assert zoo.fetch(item, progress=False).source == "cache" and len(release.requests) == 1


def test_release_down_hub_used_and_named(servers, tmp_path: Path, monkeypatch, capsys) -> None:
    release, hub = servers
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    hub.files[HF_NAME] = data = hf_file()
    item = hub_entry(release)
    release.stop()
    got = zoo.fetch(item, progress=False, retries=0)
    assert got.source == "hf" and got.kind == "hf" and got.path.read_bytes() == data
    assert got.path.is_relative_to(tmp_path / "hf")  # the HF hub cache, HF_HUB_CACHE honoured
    assert hub.requests == [(f"HEAD {HF_NAME}", None), (HF_NAME, None)]  # HEAD, then GET
    err = capsys.readouterr().err
    assert "tiny: release failed (could not download tiny from http://127.0.0.1" in err
    assert f"trying hf {HF_REPO}" in err and f"{got.path} from hf (verified" in err
    record = lock(tmp_path)[f"hf:{HF_NAME}"]
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["source"] == f"hf {HF_REPO}"
    model = create_model("timesformer_tiny", num_classes=5)
    load_checkpoint(model, got.path, kind=got.kind, replace_head=False)  # strict, HF names
    assert torch.equal(model.head.weight, tiny_hf_model(5).classifier.weight)

    hub.stop()  # both down: the verified copy in the HF cache is used, nothing asked
    assert zoo.fetch(item, progress=False) == zoo.Fetched(got.path, "hf", "cache")
    assert len(hub.requests) == 2


def test_all_sources_down_names_each(servers, monkeypatch) -> None:
    release, hub = servers
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    release.stop()
    with pytest.raises(zoo.ZooError) as err:
        zoo.fetch(hub_entry(release), progress=False, retries=0)
    message = str(err.value)
    assert message.startswith("could not download tiny from any source: release: ")
    assert f"; hf: could not download tiny from the HF hub ({HF_NAME}: " in message


def test_a_changed_file_is_refused(servers, tmp_path: Path, monkeypatch, capsys) -> None:
    release, _ = servers
    release.files["tiny.pyth"] = official_file()
    item = hub_entry(release)
    monkeypatch.setitem(zoo.ZOO, "tiny", item)
    path = zoo.download("tiny", progress=False)
    path.write_bytes(official_file(num_classes=5)[:-1] + b"\x01")  # same size, other bytes
    with pytest.raises(zoo.ZooError, match="changed since it verified") as err:
        zoo.fetch("tiny")
    assert str(path) in str(err.value) and zoo.LOCK_JSON in str(err.value)
    capsys.readouterr()
    assert tsf(["weights", "download", "tiny", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tsf weights: {path} changed since it verified")
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert len(release.requests) == 1

    path.unlink()  # deleting it downloads it again
    assert tsf(["weights", "download", "tiny", "--no-progress"]) == 0
    assert len(release.requests) == 2 and zoo.fetch("tiny").source == "cache"


def test_a_file_copied_in_by_hand_is_verified_then_recorded(tmp_path: Path) -> None:
    item = zoo.ZooEntry("tiny", "tiny.pyth", "http://127.0.0.1:9/none", "test",
                        "timesformer_tiny", 4, 5, "official")  # fmt: skip
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "tiny.pyth").write_bytes(official_file())
    assert zoo.fetch(item, download=False).source == "cache"
    assert lock(tmp_path)["tiny.pyth"]["source"] == "found in the cache"


def test_mirror_folder(servers, tmp_path: Path, monkeypatch, capsys) -> None:
    """``--from DIR``: every entry the folder holds (zoo file names), the others skipped."""
    release, _ = servers
    monkeypatch.setitem(zoo.ZOO, "tiny", hub_entry(release))
    monkeypatch.setitem(zoo.ZOO, "tiny2", hub_entry(release, "tiny2"))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tiny.pyth").write_bytes(official_file())
    (mirror / "tiny2.pyth").write_bytes(official_file())
    assert tsf(["weights", "download", "--from", str(mirror), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert f"tiny: {tmp_path / 'cache' / 'tiny.pyth'}" in out and "tiny2: " in out
    assert f"timesformer_k400: not in {mirror}, skipped" in err
    assert f"tiny: downloading from mirror {mirror}" in err
    assert release.requests == []  # the mirror is the only source
    assert lock(tmp_path)["tiny.pyth"]["source"] == f"mirror {mirror}"

    (mirror / "bad.pyth").write_bytes(b"\x00" * 4096)
    monkeypatch.setitem(zoo.ZOO, "bad", hub_entry(release, "bad"))
    assert tsf(["weights", "download", "bad", "--from", str(mirror), "--no-progress"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"zoo: bad: downloading from mirror {mirror}" and len(err) == 2
    assert err[1].startswith(f"tsf weights: {tmp_path / 'cache' / 'bad.pyth.part'} does not load")
    assert tsf(["weights", "download", "--no-progress"]) == 2  # nothing named, no mirror
    assert "--from URL|DIR" in capsys.readouterr().err


def test_mirror_url_from_the_environment(servers, tmp_path: Path, monkeypatch, capsys) -> None:
    """``LIGHTNING_TSF_ZOO_URL``: the only source (the release server is never asked); also
    ``--from URL`` for every entry, those it lacks (HTTP 404) skipped."""
    release, mirror = servers
    mirror.files["tiny.pyth"] = official_file()
    monkeypatch.setitem(zoo.ZOO, "tiny", hub_entry(release))
    monkeypatch.setenv(zoo.MIRROR_ENV, mirror.url + "/")
    got = zoo.fetch("tiny", progress=False)
    assert got.source == "mirror" and mirror.requests == [("tiny.pyth", None)]
    assert release.requests == []
    assert f"tiny: downloading from mirror {mirror.url}/" in capsys.readouterr().err

    monkeypatch.delenv(zoo.MIRROR_ENV)
    other = tmp_path / "other"
    assert tsf(["weights", "download", "--from", mirror.url, "--dir", str(other),
                "--no-progress"]) == 0  # fmt: skip
    assert (other / "tiny.pyth").read_bytes() == mirror.files["tiny.pyth"]
    assert len(mirror.requests) == 1 + len(zoo.ZOO) and release.requests == []
    assert f"timesformer_k400: not in {mirror.url}, skipped" in capsys.readouterr().err


def test_a_cache_that_cannot_be_written(tmp_path: Path) -> None:
    item = zoo.ZooEntry("tiny", "tiny.pyth", "http://127.0.0.1:9/none", "test",
                        "timesformer_tiny", 4, 5, "official")  # fmt: skip
    (tmp_path / "file").write_text("")
    with pytest.raises(zoo.ZooError, match=f"cannot write to {tmp_path / 'file' / 'c'} .*"
                                           f"set {zoo.CACHE_ENV}"):  # fmt: skip
        zoo.fetch(item, tmp_path / "file" / "c")


def test_hf_hub_offline_is_honoured(servers, monkeypatch) -> None:
    release, hub = servers
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.files[HF_NAME] = hf_file()
    release.stop()
    with pytest.raises(zoo.ZooError, match="hf: could not download tiny from the HF hub"):
        zoo.fetch(hub_entry(release), progress=False, retries=0)
    assert hub.requests == []  # offline: the hub is not asked
