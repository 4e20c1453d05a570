"""Docker's -p, --add-host, --dns, -v, --mount and --tmpfs syntax."""

from pathlib import Path

import pytest

from vmpod.container.network import PortMapping, hosts_file, parse_publish, resolv_conf
from vmpod.container.volumes import MountSpec, VolumeStore, parse_mount, parse_tmpfs, parse_volume
from vmpod.errors import VmpodError
from vmpod.paths import StateDir


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080:80", PortMapping("127.0.0.1", 8080, 80, "tcp")),
        ("0.0.0.0:8080:80/udp", PortMapping("0.0.0.0", 8080, 80, "udp")),
        ("[::1]:8080:80", PortMapping("::1", 8080, 80, "tcp")),
    ],
)
def test_publish(text: str, expected: PortMapping) -> None:
    assert parse_publish(text) == expected


def test_publish_without_host_port_picks_a_free_one() -> None:
    mapping = parse_publish("127.0.0.1::80")
    assert mapping.container_port == 80 and 0 < mapping.host_port < 65536


@pytest.mark.parametrize("text", ["80:", "a:b", "8080:80/sctp", "70000:80"])
def test_bad_publish(text: str) -> None:
    with pytest.raises(VmpodError):
        parse_publish(text)


def test_hosts_and_resolv() -> None:
    hosts = hosts_file("box", ["db:10.0.0.5", "host:host-gateway"], networked=True)
    assert "10.0.2.15\tbox" in hosts and "10.0.0.5\tdb" in hosts and "10.0.2.2\thost" in hosts
    assert resolv_conf([], True) == "nameserver 10.0.2.3\n"
    assert resolv_conf(["1.1.1.1"], True) == "nameserver 1.1.1.1\n"
    with pytest.raises(VmpodError, match="--add-host"):
        hosts_file("box", ["nocolon"], networked=True)


def test_volumes(tmp_path: Path) -> None:
    volumes = VolumeStore(StateDir(tmp_path))
    bind = parse_volume(f"{tmp_path}/src:/data:ro", volumes)
    assert bind == MountSpec("bind", "/data", str(tmp_path / "src"), True)
    assert (tmp_path / "src").is_dir()
    named = parse_volume("cache:/cache", volumes)
    assert (named.kind, named.volume, named.source) == ("volume", "cache", str(volumes.path("cache")))
    anonymous = parse_volume("/anon", volumes)
    assert anonymous.volume in volumes.names()
    assert parse_mount("type=tmpfs,target=/run,tmpfs-size=64m", volumes) == MountSpec(
        "tmpfs", "/run", options="size=64m"
    )
    assert parse_mount(f"type=bind,source={tmp_path},target=/h,readonly", volumes).readonly
    assert parse_tmpfs("/t:size=8m,ro") == MountSpec("tmpfs", "/t", readonly=True, options="size=8m")
    for bad in ("rel:rel", "/a:/b:xx", "x:../y"):
        with pytest.raises(VmpodError):
            parse_volume(bad, volumes)
    with pytest.raises(VmpodError, match="does not exist"):
        parse_mount("type=bind,source=/no/such/dir,target=/x", volumes)
