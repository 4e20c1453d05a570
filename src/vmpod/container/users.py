"""`--user NAME[:GROUP]` resolved through the image's own /etc/passwd and /etc/group, as Docker does."""

from __future__ import annotations

from dataclasses import dataclass

from vmpod.errors import VmpodError

_MAX_ID = 2**32 - 2


@dataclass(frozen=True)
class ExecUser:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


@dataclass(frozen=True)
class _Passwd:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class _Group:
    name: str
    gid: int
    members: tuple[str, ...]


def _number(text: str) -> int | None:
    if text.isdigit():
        value = int(text)
        if value <= _MAX_ID:
            return value
    return None


def _passwd(text: str) -> list[_Passwd]:
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 6 and (uid := _number(parts[2])) is not None and (gid := _number(parts[3])) is not None:
            out.append(_Passwd(parts[0], uid, gid, parts[5]))
    return out


def _groups(text: str) -> list[_Group]:
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and (gid := _number(parts[2])) is not None:
            out.append(_Group(parts[0], gid, tuple(m for m in parts[3].split(",") if m)))
    return out


def resolve_user(spec: str, passwd_text: str, group_text: str) -> ExecUser:
    user_part, _, group_part = (spec or "0").partition(":")
    users, groups = _passwd(passwd_text), _groups(group_text)
    uid = _number(user_part)
    entry = next((u for u in users if (u.uid == uid if uid is not None else u.name == user_part)), None)
    if entry is None and uid is None:
        raise VmpodError(
            f"unable to find user {user_part}: no matching entries in passwd file",
            "use a user the image defines, or a numeric UID",
        )
    uid = entry.uid if entry else uid
    assert uid is not None
    gid = entry.gid if entry else 0
    if group_part:
        number = _number(group_part)
        group = next((g for g in groups if (g.gid == number if number is not None else g.name == group_part)), None)
        if group is None and number is None:
            raise VmpodError(
                f"unable to find group {group_part}: no matching entries in group file",
                "use a group the image defines, or a numeric GID",
            )
        gid = group.gid if group is not None else int(group_part)
    name = entry.name if entry else None
    extra = tuple(sorted({g.gid for g in groups if name is not None and name in g.members} - {gid}))
    return ExecUser(uid, gid, extra, entry.home if entry and entry.home else "/")
