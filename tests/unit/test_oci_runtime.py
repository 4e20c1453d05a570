"""vmpod-runtime without VMs: config.json into START fields and shares, and the CLI's errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from vmpod.cli import runtime
from vmpod.errors import VmpodError
from vmpod.oci.bundle import layout, load, make_mount_points, missing_command


def _bundle(tmp_path: Path, **changes: Any) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "bin" / "sh").touch()
    config: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "someFutureField": {"x": 1},
        **changes,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_config_becomes_start_fields_and_shares(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    path = _bundle(
        tmp_path,
        hostname="h",
        process={
            "args": ["sh", "-c", "true"],
            "env": ["A=1"],
            "cwd": "/tmp",
            "terminal": False,
            "user": {"uid": 1000, "gid": 100, "additionalGids": [10]},
        },
        mounts=[
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev/shm", "type": "bind", "source": str(data), "options": ["rbind"]},
            {"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=1m"]},
            {"destination": "/data", "type": "bind", "source": str(data), "options": ["rbind", "ro"]},
            {"destination": "/etc/hosts", "type": "bind", "source": str(hosts), "options": ["bind"]},
        ],
    )
    vm = layout(load(path))
    spec = vm.process
    assert (spec.args, spec.env, spec.cwd, spec.uid, spec.gid, spec.groups) == (
        ("sh", "-c", "true"),
        ("A=1",),
        "/tmp",
        1000,
        100,
        (10,),
    )
    assert spec.hostname == "h" and spec.root_device == "root"
    assert spec.mounts == ("tmpfs\ttmpfs\t/t\tsize=1m", "9p\tb3\t/data\tro")
    assert spec.files == ("/etc/hosts\t644\t127.0.0.1 localhost\n",)
    assert [(s.tag, s.readonly) for s in vm.shares] == [("root", False), ("b3", True)]


def test_readonly_root_is_9p(tmp_path: Path) -> None:
    vm = layout(load(_bundle(tmp_path, root={"path": "rootfs", "readonly": True})))
    assert (vm.process.root_fstype, vm.process.root_readonly) == ("9p", True)
    assert "root" not in vm.virtiofs_tags


def test_wrong_types_and_missing_root_are_refused(tmp_path: Path) -> None:
    with pytest.raises(VmpodError, match=r"process\.args"):
        load(_bundle(tmp_path, process={"args": "sh"}))
    with pytest.raises(VmpodError, match="not a directory"):
        load(_bundle(tmp_path, root={"path": "nowhere"}))


def test_missing_command_as_runc_says_it(tmp_path: Path) -> None:
    assert missing_command(load(_bundle(tmp_path))) is None
    bundle = load(_bundle(tmp_path, process={"args": ["nosuch"], "env": ["PATH=/bin"]}))
    assert missing_command(bundle) == 'exec: "nosuch": executable file not found in $PATH'


def test_mount_points_never_follow_image_symlinks(tmp_path: Path) -> None:
    path = _bundle(
        tmp_path,
        mounts=[
            {"destination": "/evil/x", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/ok/y", "type": "tmpfs", "source": "tmpfs"},
        ],
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, path / "rootfs" / "evil")
    bundle = load(path)
    make_mount_points(bundle.root, layout(bundle))
    assert not (outside / "x").exists()
    assert (path / "rootfs" / "ok" / "y").is_dir()


def test_cli_errors_are_runc_like(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "state")
    assert runtime.main(["--root", root, "state", "nope"]) == 1
    assert 'level=error msg="container does not exist"' in capsys.readouterr().err
    assert runtime.main(["--root", root, "start", "nope"]) == 1
    assert runtime.main(["--root", root, "delete", "--force", "nope"]) == 0
    assert runtime.main(["--root", root, "kill", "nope", "NOSIG"]) == 1
    capsys.readouterr()
    assert runtime.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("vmpod-runtime version ")
    assert runtime.main(["features"]) == 0
    assert json.loads(capsys.readouterr().out)["ociVersionMax"] == "1.0.2"
    log = tmp_path / "log.json"
    assert runtime.main(["--root", root, "--log", str(log), "--log-format", "json", "state", "nope"]) == 1
    assert json.loads(log.read_text())["level"] == "error"
