"""vmpod-runtime without VMs: config.json into START fields and shares, and the CLI's errors."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from vmpod.cli import runtime
from vmpod.errors import VmpodError
from vmpod.oci import hooks
from vmpod.oci.bundle import Hook, layout, load, make_mount_points, missing_command
from vmpod.oci.netns import NetworkMode, is_sandbox
from vmpod.oci.state import Record, Status, Store


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


def test_rlimits_caps_and_no_new_privs_become_process_fields(tmp_path: Path) -> None:
    process = {
        "args": ["sh"],
        "rlimits": [
            {"type": "RLIMIT_NOFILE", "soft": 1000, "hard": 2048},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        ],
        "noNewPrivileges": True,
        "capabilities": {"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"], "ambient": []},
    }
    spec = layout(load(_bundle(tmp_path, process=process))).process
    assert spec.rlimits == ("RLIMIT_NOFILE\t1000\t2048", "RLIMIT_CORE\t0\t0")
    assert spec.no_new_privs is True
    assert spec.caps == "CAP_KILL,CAP_CHOWN\tCAP_KILL\t\t\t"
    fields = dict((tag.name, value) for tag, value in spec.fields() if tag.name in ("RLIMIT", "NO_NEW_PRIVS", "CAPS"))
    assert fields == {"RLIMIT": "RLIMIT_CORE\t0\t0", "NO_NEW_PRIVS": 1, "CAPS": spec.caps}
    plain = layout(load(_bundle(tmp_path, process={"args": ["sh"]}))).process
    assert (plain.rlimits, plain.no_new_privs, plain.caps) == ((), False, None)  # capabilities untouched


@pytest.mark.parametrize(
    "process",
    [
        {"args": ["sh"], "rlimits": [{"type": "NOFILE", "soft": 1, "hard": 1}]},
        {"args": ["sh"], "rlimits": [{"type": "RLIMIT_NOFILE\tX", "soft": 1, "hard": 1}]},
        {"args": ["sh"], "rlimits": [{"type": "RLIMIT_NOFILE", "soft": -1, "hard": 1}]},
        {"args": ["sh"], "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1 << 64, "hard": 1}]},
        {"args": ["sh"], "rlimits": [{"type": "RLIMIT_NOFILE", "soft": "1", "hard": 1}]},
        {"args": ["sh"], "capabilities": {"bounding": ["CAP_KILL\tCAP_X"]}},
        {"args": ["sh"], "capabilities": {"effective": ["cap_kill"]}},
        {"args": ["sh"], "capabilities": {"effective": "CAP_KILL"}},
        {"args": ["sh"], "noNewPrivileges": "yes"},
        {"args": ["sh"], "terminal": 1},
    ],
)
def test_hostile_process_limits_are_refused(tmp_path: Path, process: dict[str, Any]) -> None:
    with pytest.raises(VmpodError, match=r"config\.json"):
        load(_bundle(tmp_path, process=process))


def test_exec_process_is_built_as_runc_builds_it(tmp_path: Path) -> None:
    path = _bundle(
        tmp_path,
        process={
            "args": ["sh"],
            "env": ["PATH=/bin", "A=1"],
            "cwd": "/",
            "user": {"uid": 5, "gid": 6},
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
        },
    )
    record = Record(id="x", bundle=str(path), rootfs=str(path / "rootfs"), status=Status.RUNNING, created="now")
    parser = runtime.build_parser()
    args = parser.parse_args(
        ["exec", "-t", "--cwd", "/tmp", "-e", "A=2", "-u", "7:8", "-g", "9", "--cap", "CAP_CHOWN", "x", "id", "-u"]
    )
    process = runtime.exec_process(record, args)
    assert process["args"] == ["id", "-u"] and process["terminal"] is True and process["cwd"] == "/tmp"
    assert process["env"] == ["PATH=/bin", "A=2"]
    assert process["user"] == {"uid": 7, "gid": 8, "additionalGids": [9]}
    assert process["capabilities"]["bounding"] == ["CAP_KILL", "CAP_CHOWN"]
    assert process["capabilities"]["ambient"] == ["CAP_CHOWN"]
    assert "inheritable" not in process["capabilities"]  # runc 1.1 leaves it alone
    file = tmp_path / "process.json"
    file.write_text(json.dumps({"args": ["true"], "cwd": "/", "terminal": False}))
    args = parser.parse_args(["exec", "--process", str(file), "--detach", "--pid-file", "p", "x"])
    assert runtime.exec_process(record, args)["args"] == ["true"]
    file.write_text(json.dumps({"args": "true"}))
    with pytest.raises(VmpodError, match=r"the exec process\.args"):
        runtime.exec_process(record, args)
    with pytest.raises(VmpodError, match="UID"):
        runtime.exec_process(record, parser.parse_args(["exec", "-u", "root", "x", "id"]))


def test_exec_and_ps_of_unknown_or_stopped_containers_fail(tmp_path: Path) -> None:
    root = tmp_path / "state"
    assert runtime.main(["--root", str(root), "exec", "nope", "true"]) == 255
    assert runtime.main(["--root", str(root), "ps", "--format", "json", "nope"]) == 1
    store = Store(root)
    path = _bundle(tmp_path)
    store.new(Record(id="gone", bundle=str(path), rootfs=str(path / "rootfs"), status=Status.STOPPED, created="t"))
    assert runtime.main(["--root", str(root), "exec", "gone", "true"]) == 255
    assert runtime.main(["--root", str(root), "ps", "gone"]) == 1


@pytest.mark.parametrize(
    ("namespaces", "mode", "address"),
    [
        (None, NetworkMode.HOST, "10.0.2.15/24"),  # no network namespace: the host's, so user-mode
        ([{"type": "pid"}], NetworkMode.HOST, "10.0.2.15/24"),
        ([{"type": "pid"}, {"type": "network"}], NetworkMode.NEW, ""),  # the address is learnt at start
        ([{"type": "network", "path": "/run/netns/x"}], NetworkMode.JOIN, ""),
    ],
)
def test_network_namespace_decides_the_vms_network(
    tmp_path: Path, namespaces: list[dict[str, str]] | None, mode: NetworkMode, address: str
) -> None:
    bundle = load(_bundle(tmp_path, linux={"namespaces": namespaces} if namespaces is not None else {}))
    assert bundle.network.mode is mode
    assert bundle.network.path == ("/run/netns/x" if mode is NetworkMode.JOIN else "")
    assert layout(bundle).process.net_address == address


def test_bad_namespaces_are_refused_and_pause_containers_recognised(tmp_path: Path) -> None:
    with pytest.raises(VmpodError, match=r"linux\.namespaces must be a list"):
        load(_bundle(tmp_path, linux={"namespaces": {"type": "network"}}))
    with pytest.raises(VmpodError, match="path must be a string"):
        load(_bundle(tmp_path, linux={"namespaces": [{"type": "network", "path": 3}]}))
    assert is_sandbox({"io.kubernetes.cri.container-type": "sandbox"})
    assert is_sandbox({"io.kubernetes.cri-o.ContainerType": "sandbox"})
    assert not is_sandbox({"io.kubernetes.cri.container-type": "container"})


def test_hooks_get_the_state_and_their_failures_are_named(tmp_path: Path) -> None:
    out = tmp_path / "state.json"
    good = Hook("/bin/sh", ("sh", "-c", f'cat > {out}; echo "$X" >> {out}'), ("X=from-env",))
    asyncio.run(hooks.run_hook(good, b'{"status": "creating"}'))
    assert out.read_text() == '{"status": "creating"}from-env\n'
    with pytest.raises(VmpodError, match=r"hook /bin/sh failed: bad news"):
        asyncio.run(hooks.run_hook(Hook("/bin/sh", ("sh", "-c", "echo bad news >&2; exit 3")), b"{}"))
    with pytest.raises(VmpodError, match=r"hook /bin/sh timed out"):
        asyncio.run(hooks.run_hook(Hook("/bin/sh", ("sh", "-c", "sleep 30"), timeout=1), b"{}"))
    with pytest.raises(VmpodError, match=r"hook /no/such/hook: No such file or directory"):
        asyncio.run(hooks.run_hook(Hook("/no/such/hook"), b"{}"))
