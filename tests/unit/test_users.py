import pytest

from vmpod.container.users import ExecUser, resolve_user
from vmpod.errors import VmpodError

PASSWD = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\nbroken line\n"
GROUP = "root:x:0:\nwheel:x:10:user,other\naudio:x:29:user\nuser:x:1000:\nstaff:x:50:\n"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", ExecUser(0, 0, (), "/root")),
        ("user", ExecUser(1000, 1000, (10, 29), "/home/user")),
        ("1000", ExecUser(1000, 1000, (10, 29), "/home/user")),
        ("user:staff", ExecUser(1000, 50, (10, 29), "/home/user")),
        ("user:77", ExecUser(1000, 77, (10, 29), "/home/user")),
        ("4242", ExecUser(4242, 0, (), "/")),
        ("4242:4243", ExecUser(4242, 4243, (), "/")),
    ],
)
def test_resolve(spec: str, expected: ExecUser) -> None:
    assert resolve_user(spec, PASSWD, GROUP) == expected


def test_unknown_user_and_group() -> None:
    with pytest.raises(VmpodError, match="unable to find user nobody"):
        resolve_user("nobody", PASSWD, GROUP)
    with pytest.raises(VmpodError, match="unable to find group nogroup"):
        resolve_user("user:nogroup", PASSWD, GROUP)
