"""An OCI bundle's `config.json`, read into what one VM needs: shares, START fields, hooks.

The document comes from the engine and is read as untrusted input: unknown fields are tolerated (the
runtime spec grows), wrong types are refused with the field's name, and no value ever reaches a shell.
The root (`root.path`, prepared by the engine) is shared into the VM rather than copied into a disk:
virtio-fs where `virtiofsd` exists, 9p (QEMU enforcing `readonly=on` on the host) for a read-only root
and read-only bind mounts, as vmpod does for volumes.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmpod.container.network import GATEWAY, GUEST_ADDRESS, GUEST_PREFIX
from vmpod.errors import VmpodError
from vmpod.guest.session import ProcessSpec
from vmpod.hypervisor import virtiofs
from vmpod.hypervisor.base import Share
from vmpod.oci.netns import NetworkMode, NetworkNamespace

CONFIG = "config.json"
ROOT_TAG = "root"
DEFAULT_MEMORY_MIB = 512
GUEST_OVERHEAD_MIB = 64
# The agent already mounts these (docs/protocol.md, START); a bundle asking for them gets the agent's.
AGENT_PROVIDED = frozenset({"/proc", "/sys", "/sys/fs/cgroup", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"})
KERNEL_TYPES = frozenset({"proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "securityfs", "debugfs"})
# Bind-mounted regular files (Podman's /etc/hosts, /etc/resolv.conf, /run/.containerenv …) are copied
# in as FILE fields: a share is a directory. Bounded, as the START request is.
MAX_FILE_BYTES = 128 << 10
# Mount flags that are not filesystem data: kept out of tmpfs's options.
_MOUNT_FLAGS = frozenset(
    [
        "rw",
        "ro",
        "nosuid",
        "suid",
        "nodev",
        "dev",
        "noexec",
        "exec",
        "sync",
        "async",
        "dirsync",
        "remount",
        "mand",
        "nomand",
        "atime",
        "noatime",
        "diratime",
        "nodiratime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "lazytime",
        "nolazytime",
        "bind",
        "rbind",
        "private",
        "rprivate",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "unbindable",
        "runbindable",
        "silent",
        "loud",
        "iversion",
        "noiversion",
        "tmpcopyup",
    ]
)


# The agent's order of CAPS (docs/protocol.md).
CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
RLIM_INFINITY = (1 << 64) - 1
_RLIMIT = re.compile(r"RLIMIT_[A-Z]{1,16}")
_CAPABILITY = re.compile(r"CAP_[A-Z0-9_]{1,60}")


@dataclass(frozen=True)
class Hook:
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None


@dataclass(frozen=True)
class Bundle:
    path: Path
    root: Path
    readonly: bool
    process: dict[str, Any]
    hostname: str = ""
    mounts: tuple[dict[str, Any], ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    hooks: dict[str, tuple[Hook, ...]] = field(default_factory=dict)
    vcpus: int = 1
    memory_mib: int = DEFAULT_MEMORY_MIB
    network: NetworkNamespace = field(default_factory=NetworkNamespace)

    @property
    def terminal(self) -> bool:
        return bool(self.process.get("terminal", False))


def _type(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise VmpodError(f"config.json: {where} has the wrong type")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    items = _type(value if value is not None else [], list, where)
    return tuple(_type(item, str, where) for item in items)


def _hooks(data: Any) -> dict[str, tuple[Hook, ...]]:
    out: dict[str, tuple[Hook, ...]] = {}
    for stage, entries in _type(data or {}, dict, "hooks").items():
        hooks = []
        for entry in _type(entries or [], list, f"hooks.{stage}"):
            entry = _type(entry, dict, f"hooks.{stage}[]")
            timeout = entry.get("timeout")
            hooks.append(
                Hook(
                    _type(entry.get("path"), str, f"hooks.{stage}[].path"),
                    _strings(entry.get("args"), f"hooks.{stage}[].args"),
                    _strings(entry.get("env"), f"hooks.{stage}[].env"),
                    _type(timeout, int, f"hooks.{stage}[].timeout") if timeout is not None else None,
                )
            )
        out[str(stage)] = tuple(hooks)
    return out


def check_process(value: Any, where: str = "process") -> dict[str, Any]:
    """A runtime-spec process object (config.json's, or `exec --process`'s), its types checked."""
    process: dict[str, Any] = _type(value, dict, where)
    if not _strings(process.get("args"), f"{where}.args"):
        raise VmpodError(f"{where}.args must not be empty")
    _strings(process.get("env"), f"{where}.env")
    _type(process.get("cwd", "/"), str, f"{where}.cwd")
    _type(process.get("terminal", False), bool, f"{where}.terminal")
    _type(process.get("noNewPrivileges", False), bool, f"{where}.noNewPrivileges")
    user = _type(process.get("user") or {}, dict, f"{where}.user")
    for key in ("uid", "gid"):
        _type(user.get(key, 0), int, f"{where}.user.{key}")
    for gid in _type(user.get("additionalGids") or [], list, f"{where}.user.additionalGids"):
        _type(gid, int, f"{where}.user.additionalGids[]")
    for limit in _type(process.get("rlimits") or [], list, f"{where}.rlimits"):
        limit = _type(limit, dict, f"{where}.rlimits[]")
        if not _RLIMIT.fullmatch(_type(limit.get("type"), str, f"{where}.rlimits[].type")):
            raise VmpodError(f"config.json: {where}.rlimits[].type {limit['type']!r} is not an RLIMIT_ name")
        for key in ("soft", "hard"):
            if not 0 <= _type(limit.get(key), int, f"{where}.rlimits[].{key}") <= RLIM_INFINITY:
                raise VmpodError(f"config.json: {where}.rlimits[].{key} is out of range")
    caps = _type(process.get("capabilities") or {}, dict, f"{where}.capabilities")
    for name in CAP_SETS:
        for cap in _strings(caps.get(name), f"{where}.capabilities.{name}"):
            if not _CAPABILITY.fullmatch(cap):
                raise VmpodError(f"config.json: {where}.capabilities.{name}: {cap!r} is not a capability name")
    return process


def process_fields(process: dict[str, Any]) -> dict[str, Any]:
    """A checked process object as ProcessSpec's process fields (docs/protocol.md, START and EXEC)."""
    user = process.get("user") or {}
    caps = process.get("capabilities")
    return {
        "args": tuple(process["args"]),
        "env": tuple(process.get("env") or ()),
        "cwd": process.get("cwd") or "/",
        "uid": int(user.get("uid", 0)),
        "gid": int(user.get("gid", 0)),
        "groups": tuple(int(g) for g in user.get("additionalGids") or ()),
        "terminal": bool(process.get("terminal", False)),
        "rlimits": tuple(f"{r['type']}\t{r['soft']}\t{r['hard']}" for r in process.get("rlimits") or ()),
        "no_new_privs": bool(process.get("noNewPrivileges", False)),
        # Without `capabilities` the process keeps what its user has, as with runc.
        "caps": None if caps is None else "\t".join(",".join(caps.get(name) or ()) for name in CAP_SETS),
    }


def _size(linux: dict[str, Any]) -> tuple[int, int]:
    resources = _type(linux.get("resources") or {}, dict, "linux.resources")
    cpu = _type(resources.get("cpu") or {}, dict, "linux.resources.cpu")
    vcpus = 1
    quota, period = cpu.get("quota"), cpu.get("period")
    if isinstance(quota, int) and isinstance(period, int) and quota > 0 and period > 0:
        vcpus = max(1, math.ceil(quota / period))
    memory = _type(resources.get("memory") or {}, dict, "linux.resources.memory")
    limit = memory.get("limit")
    memory_mib = DEFAULT_MEMORY_MIB
    if isinstance(limit, int) and limit > 0:
        memory_mib = max(math.ceil(limit / (1 << 20)), 16) + GUEST_OVERHEAD_MIB
    return vcpus, memory_mib


def load(path: Path) -> Bundle:
    """Reads `path/config.json`; the root is resolved against the bundle as the spec says."""
    bundle = path.absolute()
    try:
        data = json.loads((bundle / CONFIG).read_bytes())
    except FileNotFoundError:
        raise VmpodError(f"{bundle / CONFIG} does not exist", "give the bundle directory with --bundle") from None
    except (OSError, ValueError) as e:
        raise VmpodError(f"cannot read {bundle / CONFIG}: {e}") from None
    data = _type(data, dict, "the document")
    root = _type(data.get("root"), dict, "root")
    root_path = Path(_type(root.get("path"), str, "root.path"))
    root_path = root_path if root_path.is_absolute() else bundle / root_path
    if not root_path.is_dir():
        raise VmpodError(f"the root filesystem {root_path} is not a directory")
    process = check_process(data.get("process"))
    mounts = tuple(_type(m, dict, "mounts[]") for m in _type(data.get("mounts") or [], list, "mounts"))
    for mount in mounts:
        _type(mount.get("destination"), str, "mounts[].destination")
    annotations = _type(data.get("annotations") or {}, dict, "annotations")
    linux = _type(data.get("linux") or {}, dict, "linux")
    vcpus, memory = _size(linux)
    return Bundle(
        path=bundle,
        root=root_path,
        readonly=bool(root.get("readonly", False)),
        process=process,
        hostname=_type(data.get("hostname", ""), str, "hostname"),
        mounts=mounts,
        annotations={str(k): str(v) for k, v in annotations.items()},
        hooks=_hooks(data.get("hooks")),
        vcpus=vcpus,
        memory_mib=memory,
        network=NetworkNamespace.from_config(linux),
    )


@dataclass(frozen=True)
class VmLayout:
    """The bundle in vmpod's terms: host directories to share, and the START request."""

    shares: tuple[Share, ...]
    virtiofs_tags: frozenset[str]
    process: ProcessSpec


def _is_bind(mount: dict[str, Any]) -> bool:
    options = mount.get("options") or []
    return mount.get("type") == "bind" or "bind" in options or "rbind" in options


def _tmpfs_options(options: list[str], readonly: bool) -> str:
    data = [o for o in options if isinstance(o, str) and o not in _MOUNT_FLAGS and "," not in o]
    return ",".join((["ro"] if readonly else []) + data)


def layout(bundle: Bundle, rows: int = 24, cols: int = 80, stdin_open: bool = False) -> VmLayout:
    use_virtiofs = virtiofs.available()
    shares: list[Share] = []
    tags: set[str] = set()

    def share(tag: str, path: Path, readonly: bool) -> str:
        """The transport for one shared directory: 9p when read-only (QEMU enforces it), else virtio-fs."""
        shares.append(Share(tag, path, readonly))
        if use_virtiofs and not readonly:
            tags.add(tag)
            return "virtiofs"
        return "9p"

    root_type = share(ROOT_TAG, bundle.root, bundle.readonly)
    mounts: list[str] = []
    files: list[str] = []
    for index, mount in enumerate(bundle.mounts):
        target = os.path.normpath(mount["destination"])
        kind = mount.get("type") or ""
        options = [o for o in mount.get("options") or [] if isinstance(o, str)]
        readonly = "ro" in options
        if "\t" in target or "\n" in target or not target.startswith("/"):
            raise VmpodError(f"mount destination {target!r} must be an absolute path")
        if target in AGENT_PROVIDED or kind in KERNEL_TYPES:
            continue
        if kind == "tmpfs":
            mounts.append(f"tmpfs\ttmpfs\t{target}\t{_tmpfs_options(options, readonly)}")
        elif _is_bind(mount):
            source = Path(_type(mount.get("source"), str, "mounts[].source"))
            try:
                info = source.stat()
            except OSError as e:
                raise VmpodError(f"bind mount source {source}: {e.strerror}") from None
            if stat.S_ISDIR(info.st_mode):
                transport = share(f"b{index}", source, readonly)
                mounts.append(f"{transport}\tb{index}\t{target}\t{'ro' if readonly else ''}")
            elif stat.S_ISREG(info.st_mode) and info.st_size <= MAX_FILE_BYTES:
                content = source.read_bytes().decode("utf-8", errors="replace")
                files.append(f"{target}\t{stat.S_IMODE(info.st_mode):o}\t{content}")
            # Devices, sockets and large files cannot cross into a VM: left out (docs/conformance.md).
        # Other filesystem types (overlay, nfs …) name host resources the VM cannot reach: left out.
    return VmLayout(
        tuple(shares),
        frozenset(tags),
        ProcessSpec(
            **process_fields(bundle.process),
            stdin_open=stdin_open or bundle.terminal,
            root_device=ROOT_TAG,
            root_fstype=root_type,
            root_readonly=bundle.readonly,
            hostname=bundle.hostname,
            rows=rows,
            cols=cols,
            mounts=tuple(mounts),
            files=tuple(files),
            # In a network namespace the address is the namespace's, known at start (oci/netns.py).
            net_address=f"{GUEST_ADDRESS}/{GUEST_PREFIX}" if bundle.network.mode is NetworkMode.HOST else "",
            net_gateway=GATEWAY if bundle.network.mode is NetworkMode.HOST else "",
        ),
    )


def missing_command(bundle: Bundle) -> str | None:
    """runc's create-time error for a command that is not in the root, as engines expect it (they map it
    to 127). Only existence is checked, on the host, without opening anything; the agent decides the rest."""
    command = str(bundle.process["args"][0])
    env = dict(e.split("=", 1) for e in bundle.process.get("env") or () if "=" in e)
    if "/" in command:
        candidates = [command if command.startswith("/") else os.path.join(bundle.process.get("cwd") or "/", command)]
    else:
        path = env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        candidates = [os.path.join(d or ".", command) for d in path.split(":") if d.startswith("/")]
    for candidate in candidates:
        if os.path.lexists(os.path.join(bundle.root, candidate.lstrip("/"))):
            return None
    if "/" in command:
        return f'exec: "{command}": stat {command}: no such file or directory'
    return f'exec: "{command}": executable file not found in $PATH'


def make_mount_points(root: Path, vm_layout: VmLayout) -> None:
    """Creates missing mount points in the root on the host, as runc does (the root may reach the VM
    read-only). Walked one component at a time without following symlinks: the image is untrusted."""
    for value in vm_layout.process.mounts:
        _make_path(root, value.split("\t")[2], file=False)
    for value in vm_layout.process.files:
        _make_path(root, value.split("\t", 1)[0], file=True)


def _make_path(root: Path, target: str, file: bool) -> None:
    parts = [p for p in target.split("/") if p and p != "."]
    if not parts or ".." in parts:
        return
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, name in enumerate(parts):
            if file and index == len(parts) - 1:
                with suppress(FileExistsError):
                    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd))
                return
            with suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = child
    except OSError:
        return  # a symlink or a file in the way: the agent reports it when it mounts
    finally:
        os.close(fd)
