"""Pulling from registries that want credentials: htpasswd basic auth, and bearer tokens from a token server."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from tests.conftest import Vmpod
from tests.registry.conftest import PASSWORD, USER, Registry


@pytest.fixture
def vmpod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Vmpod:
    monkeypatch.setenv("VMPOD_AUTH_FILE", str(tmp_path / "auth" / "config.json"))
    return Vmpod(tmp_path / "root")


def auth_file(tmp_path: Path) -> Path:
    return tmp_path / "auth" / "config.json"


def test_basic_auth_login_pull_logout(basic_registry: Registry, vmpod: Vmpod, tmp_path: Path) -> None:
    ref = f"{basic_registry.domain}/private/busybox:1"
    done = vmpod("pull", ref)
    assert done.returncode == 125
    assert f"authentication required by {basic_registry.domain}".encode() in done.stderr
    assert b"vmpod login" in done.stderr

    done = vmpod("login", "-u", USER, "--password-stdin", basic_registry.domain, input=b"wrong\n")
    assert done.returncode == 125
    assert f"authentication to {basic_registry.domain} failed for user '{USER}'".encode() in done.stderr
    assert not auth_file(tmp_path).exists()

    auth_file(tmp_path).parent.mkdir()
    auth_file(tmp_path).write_text(json.dumps({"auths": {"other.example": {"auth": "eDp5"}}, "detachKeys": "ctrl-q"}))
    done = vmpod("login", "-u", USER, "--password-stdin", basic_registry.domain, input=PASSWORD.encode() + b"\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"Login Succeeded\n"
    assert stat.S_IMODE(os.stat(auth_file(tmp_path)).st_mode) == 0o600
    config = json.loads(auth_file(tmp_path).read_text())
    assert config["detachKeys"] == "ctrl-q" and "other.example" in config["auths"]
    assert base64.b64decode(config["auths"][basic_registry.domain]["auth"]) == f"{USER}:{PASSWORD}".encode()

    done = vmpod("pull", ref)
    assert done.returncode == 0, done.stderr
    assert b"Status: Downloaded newer image" in done.stdout

    done = vmpod("logout", basic_registry.domain)
    assert done.stdout == f"Removing login credentials for {basic_registry.domain}\n".encode()
    assert basic_registry.domain not in json.loads(auth_file(tmp_path).read_text())["auths"]
    assert vmpod("logout", basic_registry.domain).stdout == f"Not logged in to {basic_registry.domain}\n".encode()


def test_wrong_credentials_in_docker_config(basic_registry: Registry, vmpod: Vmpod, tmp_path: Path) -> None:
    auth_file(tmp_path).parent.mkdir()
    token = base64.b64encode(f"{USER}:not-the-password".encode()).decode()
    auth_file(tmp_path).write_text(json.dumps({"auths": {f"http://{basic_registry.domain}/v2/": {"auth": token}}}))
    done = vmpod("pull", f"{basic_registry.domain}/private/busybox:1")
    assert done.returncode == 125
    assert f"authentication to {basic_registry.domain} failed for user '{USER}'".encode() in done.stderr
    assert not (vmpod.root / "images" / "repositories.json").exists()


def test_anonymous_and_credentialed_tokens(token_registry: Registry, vmpod: Vmpod, tmp_path: Path) -> None:
    done = vmpod("pull", f"{token_registry.domain}/public/busybox:1")
    assert done.returncode == 0, done.stderr  # an anonymous token suffices

    private = f"{token_registry.domain}/private/busybox:1"
    done = vmpod("pull", private)
    assert done.returncode == 125
    assert b"authentication required" in done.stderr

    done = vmpod("login", "-u", USER, "-p", "wrong", token_registry.domain)
    assert done.returncode == 125
    assert b"failed for user 'tester': the token server said 401" in done.stderr
    assert not auth_file(tmp_path).exists()

    done = vmpod("login", "-u", USER, "--password-stdin", token_registry.domain, input=PASSWORD.encode())
    assert done.returncode == 0, done.stderr
    done = vmpod("pull", private)
    assert done.returncode == 0, done.stderr
    assert b": Already exists" in done.stderr  # the same layer as public/busybox's, stored once
