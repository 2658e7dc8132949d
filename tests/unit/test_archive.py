"""Tarball member rules (trove_core.archive): what a restore may create."""

from __future__ import annotations

import tarfile

import pytest

from trove_core.archive import MemberChecker, UnsafeMemberError, normalize_member_name


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    return info


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a", "a"), ("./a/b", "a/b"), ("a//b/", "a/b"), (".", ""), ("./", ""), ("a/./b", "a/b")],
)
def test_normalize(name: str, expected: str) -> None:
    assert normalize_member_name(name) == expected


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "a/..", "a\x00b", "//x"])
def test_normalize_refuses(name: str) -> None:
    with pytest.raises(UnsafeMemberError):
        normalize_member_name(name)


def test_plans_for_allowed_members() -> None:
    checker = MemberChecker()
    assert checker.check(_info("./", tarfile.DIRTYPE)) is None
    plan = checker.check(_info("d", tarfile.DIRTYPE, mode=0o4755))
    assert plan is not None
    assert (plan.kind, plan.mode) == ("dir", 0o755)
    plan = checker.check(_info("d/f", mode=0o6755))
    assert plan is not None
    assert (plan.kind, plan.rel, plan.mode) == ("file", "d/f", 0o755)
    plan = checker.check(_info("d/link", tarfile.SYMTYPE, "/usr/bin/python3"))
    assert plan is not None
    assert (plan.kind, plan.link_target) == ("symlink", "/usr/bin/python3")
    plan = checker.check(_info("hard", tarfile.LNKTYPE, "./d/f"))
    assert plan is not None
    assert (plan.kind, plan.link_target) == ("hardlink", "d/f")


@pytest.mark.parametrize(
    "members",
    [
        [_info("/abs")],
        [_info("../up")],
        [_info("l", tarfile.SYMTYPE, "/etc"), _info("l/x")],
        [_info("l", tarfile.SYMTYPE, "/etc"), _info("l/sub", tarfile.DIRTYPE)],
        [_info("l", tarfile.SYMTYPE, "d"), _info("l/x")],  # even a link that stays inside
        [_info("f"), _info("f/x")],
        [_info("c", tarfile.CHRTYPE)],
        [_info("b", tarfile.BLKTYPE)],
        [_info("p", tarfile.FIFOTYPE)],
        [_info("h", tarfile.LNKTYPE, "/etc/passwd")],
        [_info("h", tarfile.LNKTYPE, "../etc/passwd")],
        [_info("h", tarfile.LNKTYPE, "missing")],
        [_info("l", tarfile.SYMTYPE, "/etc/passwd"), _info("h", tarfile.LNKTYPE, "l")],
        [_info("d", tarfile.DIRTYPE), _info("d")],
        [_info("f"), _info("f", tarfile.DIRTYPE)],
        [_info("s", tarfile.SYMTYPE, "")],
        [_info(".")],
    ],
)
def test_refused_sequences(members: list[tarfile.TarInfo]) -> None:
    checker = MemberChecker()
    *earlier, last = members
    for member in earlier:
        checker.check(member)
    with pytest.raises(UnsafeMemberError):
        checker.check(last)


def test_later_file_replaces_link_name() -> None:
    checker = MemberChecker()
    checker.check(_info("x", tarfile.SYMTYPE, "/etc/passwd"))
    plan = checker.check(_info("x"))
    assert plan is not None
    assert plan.kind == "file"
    assert "x" not in checker.symlinks
