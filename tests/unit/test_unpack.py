"""Layer unpacking keeps what images need and writes nothing outside the root."""

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from vmpod.errors import VmpodError
from vmpod.rootfs.unpack import Limits, unpack_layers


def _layer(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _entry(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "", **kw: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    for key, value in kw.items():
        setattr(info, key, value)
    return info


def test_modes_owners_links_and_whiteouts(tmp_path: Path) -> None:
    lower = _layer(
        tmp_path / "lower.tar",
        (_entry("bin", tarfile.DIRTYPE, 0o755), None),
        (_entry("bin/su", mode=0o4755, uid=0, gid=0), b"su"),
        (_entry("bin/sh", tarfile.SYMTYPE, link="/bin/busybox"), None),
        (_entry("bin/hard", tarfile.LNKTYPE, link="bin/su"), None),
        (_entry("tmp", tarfile.DIRTYPE, 0o1777), None),
        (_entry("home/u/file", uid=1000, gid=1000), b"mine"),
        (_entry("gone"), b"x"),
        (_entry("opaque/old"), b"x"),
        (_entry("ro", tarfile.DIRTYPE, 0o555), None),
        (_entry("ro/inside"), b"x"),
    )
    upper = _layer(
        tmp_path / "upper.tar",
        (_entry(".wh.gone"), b""),
        (_entry("opaque/.wh..wh..opq"), b""),
        (_entry("opaque/new"), b"y"),
    )
    root = tmp_path / "root"
    root.mkdir()
    unpack_layers([lower, upper], root)
    assert stat.S_IMODE(os.lstat(root / "bin/su").st_mode) == 0o4755
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert os.lstat(root / "bin/hard").st_ino == os.lstat(root / "bin/su").st_ino
    assert stat.S_IMODE(os.lstat(root / "tmp").st_mode) == 0o1777
    assert (os.lstat(root / "home/u/file").st_uid, os.lstat(root / "home/u/file").st_gid) == (1000, 1000)
    assert not (root / "gone").exists()
    assert sorted(p.name for p in (root / "opaque").iterdir()) == ["new"]
    assert (root / "ro/inside").read_bytes() == b"x"


HOSTILE: list[tuple[str, Callable[[Path], list[tuple[tarfile.TarInfo, bytes | None]]], str]] = [
    ("dotdot", lambda d: [(_entry("../escape"), b"x")], "escapes the root"),
    ("absolute", lambda d: [(_entry("/abs"), b"x")], "absolute path"),
    (
        "symlink parent",
        lambda d: [(_entry("link", tarfile.SYMTYPE, link=str(d)), None), (_entry("link/escape"), b"x")],
        "through a symlink",
    ),
    ("hardlink outside", lambda d: [(_entry("h", tarfile.LNKTYPE, link="../outside"), None)], "escapes the root"),
    (
        "hardlink via symlink",
        lambda d: [
            (_entry("s", tarfile.SYMTYPE, link=str(d / "outside")), None),
            (_entry("h", tarfile.LNKTYPE, link="s"), None),
        ],
        "non-file",
    ),
]


@pytest.mark.parametrize(("name", "members", "problem"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_layers_write_nothing_outside(
    tmp_path: Path, name: str, members: Callable[[Path], list[tuple[tarfile.TarInfo, bytes | None]]], problem: str
) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    root = tmp_path / "root"
    root.mkdir()
    layer = _layer(tmp_path / "layer.tar", *members(tmp_path))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(VmpodError, match=problem):
        unpack_layers([layer], root)
    assert outside.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_decompression_bomb_is_stopped(tmp_path: Path) -> None:
    layer = _layer(tmp_path / "big.tar", (_entry("big"), b"\0" * 10_000))
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(VmpodError, match="too large"):
        unpack_layers([layer], root, Limits(max_bytes=1000))
