"""Bridged networks, run inside a network namespace the test makes (nothing touches the host's network):
one address per container, containers reach each other by name, nothing left behind."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import Vmpod

pytestmark = pytest.mark.integration


@pytest.fixture
def in_netns(vmpod: Vmpod) -> Iterator[Vmpod]:
    if shutil.which("ip") is None:
        pytest.fail("`ip` is missing: apt-get install iproute2")
    namespace = f"vmpodtest-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)

    class InNamespace(Vmpod):
        def argv(self, *args: str) -> list[str]:
            return ["ip", "netns", "exec", namespace, *super().argv(*args)]

    try:
        yield InNamespace(vmpod.root)
        links = subprocess.run(["ip", "netns", "exec", namespace, "ip", "-o", "link"], capture_output=True, text=True)
        assert "vmpod" not in links.stdout and "vmtap" not in links.stdout, links.stdout
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)


def test_containers_on_a_network_reach_each_other_by_name(in_netns: Vmpod) -> None:
    in_netns("network", "create", "--subnet", "10.77.3.0/24", "app", check=True)
    assert "10.77.3.0/24" in in_netns("network", "ls", check=True).stdout.decode()
    try:
        script = "mkdir /www && echo from-srv > /www/index.html && exec httpd -f -p 80 -h /www"
        in_netns("run", "-d", "--name", "srv", "--network", "app", "busybox", "sh", "-c", script, check=True)
        done = in_netns(
            "run",
            "--rm",
            "--network",
            "app",
            "busybox",
            "sh",
            "-c",
            "ip -4 addr show eth0 | grep -o '10.77.3.[0-9]*/24'; wget -qO- http://srv/",
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode().split() == ["10.77.3.3/24", "from-srv"]
        # A container started *before* its peer finds it too: names resolve live through the network's DNS.
        early = in_netns("run", "-d", "--name", "early", "--network", "app", "busybox", "sleep", "600")
        assert early.returncode == 0, early.stderr
        in_netns("run", "-d", "--name", "late", "--network", "app", "busybox", "sleep", "600", check=True)
        found = in_netns("exec", "early", "nslookup", "late")
        assert b"10.77.3." in found.stdout, found.stdout + found.stderr
        in_netns("rm", "-f", "early", "late", check=True)
        refused = in_netns("network", "rm", "app")
        assert refused.returncode == 1 and b"active containers" in refused.stderr
        in_netns("rm", "-f", "srv", check=True)
    finally:
        in_netns("rm", "-f", "srv", "early", "late")
        in_netns("network", "rm", "app")
    assert "app" not in in_netns("network", "ls", check=True).stdout.decode()
