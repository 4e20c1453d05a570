"""The in-process cpio writer produces archives that GNU cpio reads back."""

import shutil
import subprocess
from pathlib import Path

import pytest

from vmpod.rootfs.initramfs import build


def test_cpio_lists_agent_and_modules(tmp_path: Path) -> None:
    if shutil.which("cpio") is None:
        pytest.fail("cpio is missing: apt-get install cpio")
    agent = tmp_path / "agent"
    agent.write_bytes(b"\x7fELF fake agent")
    module = tmp_path / "virtio_blk.ko"
    module.write_bytes(b"module")
    image = build(agent, [module], tmp_path / "cache")
    assert build(agent, [module], tmp_path / "cache") == image  # cached by content
    listing = subprocess.run(["cpio", "-itv"], input=image.read_bytes(), capture_output=True, check=True).stdout
    names = [line.split()[-1] for line in listing.decode().splitlines()]
    assert names == [
        "dev",
        "proc",
        "sys",
        "newroot",
        "modules",
        "dev/console",
        "init",
        "modules/00-virtio_blk.ko",
        "modules.list",
    ]
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["cpio", "-id", "--no-absolute-filenames", "init", "modules.list"],
        input=image.read_bytes(),
        cwd=out,
        check=True,
        capture_output=True,
    )
    assert (out / "init").read_bytes() == agent.read_bytes()
    assert (out / "modules.list").read_text() == "/modules/00-virtio_blk.ko\n"
