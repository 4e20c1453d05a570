import pytest

from vmpod.cli.sizes import parse_size
from vmpod.errors import VmpodError


@pytest.mark.parametrize(
    ("text", "value"),
    [("512m", 512 << 20), ("1g", 1 << 30), ("100", 100), ("2k", 2048), ("1.5g", 3 << 29), ("64MB", 64 << 20)],
)
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


def test_bad_size() -> None:
    with pytest.raises(VmpodError, match="invalid size"):
        parse_size("lots")
