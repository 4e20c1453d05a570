import pytest

from vmpod.errors import VmpodError
from vmpod.image.reference import Reference


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox"),
        ("me/app:1.0", "docker.io/me/app:1.0", "me/app"),
        ("localhost:5000/a/b:tag", "localhost:5000/a/b:tag", "localhost:5000/a/b"),
        ("quay.io/x/y", "quay.io/x/y:latest", "quay.io/x/y"),
        ("x@sha256:" + "a" * 64, "docker.io/library/x@sha256:" + "a" * 64, "x"),
    ],
)
def test_parse(text: str, full: str, familiar: str) -> None:
    ref = Reference.parse(text)
    assert str(ref) == full
    assert ref.familiar_name == familiar


@pytest.mark.parametrize("text", ["UPPER", "a:b:c", "", "x@sha256:short", "a//b", "-a"])
def test_invalid(text: str) -> None:
    with pytest.raises(VmpodError, match="invalid reference"):
        Reference.parse(text)
