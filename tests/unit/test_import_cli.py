"""`vmpod import` and `vmpod images` as a user calls them (no VM needed)."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest


def _vmpod(root: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "vmpod.cli", "--root", str(root), *args], input=stdin, capture_output=True, timeout=60
    )


def _tarball(*names: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 2
            archive.addfile(info, io.BytesIO(b"hi"))
    return out.getvalue()


def _store_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock")


def test_import_gzip_from_stdin_and_list(tmp_path: Path) -> None:
    done = _vmpod(
        tmp_path,
        "import",
        "--change",
        "ENV A=1",
        "-",
        "example.com/team/app:1.0",
        stdin=gzip.compress(_tarball("bin/app")),
    )
    assert done.returncode == 0, done.stderr
    image_id = done.stdout.decode().strip()
    assert image_id.startswith("sha256:")
    rows = [json.loads(line) for line in _vmpod(tmp_path, "images", "--format", "json").stdout.splitlines()]
    assert [(r["Repository"], r["Tag"], r["ID"]) for r in rows] == [("example.com/team/app", "1.0", image_id)]
    assert _vmpod(tmp_path, "images", "-q").stdout.decode().strip() == image_id[7:19]
    table = _vmpod(tmp_path, "images").stdout.decode()
    assert "example.com/team/app" in table and image_id[7:19] in table


def test_same_content_gives_the_same_layer(tmp_path: Path) -> None:
    tar = _tarball("a")
    for name in ("one", "two"):
        assert _vmpod(tmp_path, "import", "-", name, stdin=tar).returncode == 0
    layers = [p for p in (tmp_path / "images" / "blobs" / "sha256").iterdir() if p.stat().st_size == len(tar)]
    assert len(layers) == 1


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (_tarball("../../etc/evil"), "bad", b"escapes the root"),
        (_tarball("/etc/evil"), "bad", b"absolute path"),
        (b"this is not a tarball at all" * 100, "bad", b"not a tar archive"),
        (gzip.compress(_tarball("ok"), mtime=0)[:-30], "bad", b"cannot read"),
        (_tarball("ok"), "Bad_Name", b"invalid reference"),
    ],
    # Explicit ids: test ids made from data must be the same in every xdist worker.
    ids=["dotdot", "absolute", "not-a-tar", "truncated-gzip", "bad-name"],
)
def test_bad_input_is_refused_and_stores_nothing(tmp_path: Path, data: bytes, name: str, message: bytes) -> None:
    assert _vmpod(tmp_path, "import", "-", "good", stdin=_tarball("x")).returncode == 0
    before = _store_files(tmp_path)
    done = _vmpod(tmp_path, "import", "-", name, stdin=data)
    assert done.returncode == 125
    assert message in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert _store_files(tmp_path) == before


def test_missing_file(tmp_path: Path) -> None:
    done = _vmpod(tmp_path, "import", str(tmp_path / "nope.tar"), "x")
    assert done.returncode == 125
    assert b"cannot read" in done.stderr


def test_info_names_accelerator_kernel_agent_and_state(tmp_path: Path) -> None:
    done = _vmpod(tmp_path, "info", "--format", "json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["Accelerator"] in ("kvm", "tcg")
    assert info["AcceleratorReason"]
    assert info["StateDir"] == str(tmp_path)
    assert info["Drivers"]["qemu"] == "available"
    assert "vmpod-agent" in info["Agent"] and "protocol 1" in info["Agent"]
