import pytest

from vmpod.container.spec import ProcessRequest, argv, environment, working_dir
from vmpod.errors import VmpodError
from vmpod.image.config import RunConfig


def test_changes_as_docker_import_applies_them() -> None:
    config = RunConfig()
    for change in [
        'CMD ["/bin/sh", "-c", "echo hi"]',
        "ENTRYPOINT /init",
        "ENV A=1 B=2",
        "ENV C three",
        "WORKDIR /srv",
        "USER user",
        "EXPOSE 80",
        "LABEL k=v",
    ]:
        config = config.with_change(change)
    assert config.cmd == ("/bin/sh", "-c", "echo hi")
    assert config.entrypoint == ("/bin/sh", "-c", "/init")
    assert config.env == ("A=1", "B=2", "C=three")
    assert (config.working_dir, config.user) == ("/srv", "user")
    assert config.to_dict()["ExposedPorts"] == {"80/tcp": {}}
    assert RunConfig.from_dict(config.to_dict()) == config


def test_unknown_change_is_refused() -> None:
    with pytest.raises(VmpodError, match="unsupported --change"):
        RunConfig().with_change("RUN rm -rf /")


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "request_", "expected"),
    [
        ((), ("sh",), ProcessRequest(), ("sh",)),
        ((), ("sh",), ProcessRequest(command=("ls", "-l")), ("ls", "-l")),
        (("/ep",), ("a",), ProcessRequest(), ("/ep", "a")),
        (("/ep",), ("a",), ProcessRequest(command=("b",)), ("/ep", "b")),
        (("/ep",), ("a",), ProcessRequest(entrypoint="/other"), ("/other",)),
        (("/ep",), ("a",), ProcessRequest(entrypoint="", command=("x",)), ("x",)),
    ],
)
def test_entrypoint_and_cmd(
    entrypoint: tuple[str, ...], cmd: tuple[str, ...], request_: ProcessRequest, expected: tuple[str, ...]
) -> None:
    assert argv(RunConfig(entrypoint=entrypoint, cmd=cmd), request_) == expected


def test_no_command_at_all() -> None:
    with pytest.raises(VmpodError, match="no command"):
        argv(RunConfig(), ProcessRequest())


def test_environment_order_and_overrides(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=1\nFROM_HOST\n\nB=file\n")
    monkeypatch.setenv("FROM_HOST", "host")
    config = RunConfig(env=("PATH=/bin", "A=image", "B=image"))
    request = ProcessRequest(
        env=("B=cli", "C=cli", "UNSET_ON_HOST"), env_files=(str(env_file),), hostname="h", tty=True
    )
    env = environment(config, request, "/root")
    assert env == (
        "PATH=/bin",
        "HOSTNAME=h",
        "A=image",
        "B=cli",
        "TERM=xterm",
        "FROM_FILE=1",
        "FROM_HOST=host",
        "C=cli",
        "HOME=/root",
    )


def test_relative_workdir_is_refused() -> None:
    with pytest.raises(VmpodError, match="not absolute"):
        working_dir(RunConfig(), ProcessRequest(workdir="rel"))
