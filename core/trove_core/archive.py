"""Snapshot tarball rules: which members a restore may create, checked before anything is written.

A snapshot tarball is data from the store, and the store may hold anything (a tampered
object, a bucket shared with someone else), so every member is checked as hostile input:
names must stay inside the namespace, only regular files, directories, symlinks and hard
links to earlier regular files are allowed, and a name may never pass *through* a symlink.
Symlinks themselves are stored as inert names whatever they point at: the agent can make the
same link with ``ln -s``, the sandbox resolves it inside its own root, and the server's file
operations refuse to follow links that leave the namespace. What must never happen is the
restore writing through one, which the extractor guarantees by creating every name with
``O_NOFOLLOW`` below directories it made itself, and which ``check_member`` refuses up front.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from typing import Literal

MemberKind = Literal["dir", "file", "symlink", "hardlink"]


class UnsafeMemberError(ValueError):
    """A tarball member a restore must refuse; the message names the member and the reason."""


@dataclass(frozen=True)
class MemberPlan:
    """What to create for one member: ``rel`` is normalised (no ``./``, no trailing ``/``)."""

    kind: MemberKind
    rel: str
    mode: int
    mtime: float
    size: int = 0
    link_target: str = ""  # symlink: raw target; hardlink: normalised rel of an earlier file


def normalize_member_name(name: str) -> str:
    """The namespace-relative form of a member name; ``""`` is the root itself.

    Raises ``UnsafeMemberError`` for absolute names, ``..`` components, NUL and backslashes
    that some extractors treat as separators.
    """
    if "\x00" in name:
        raise UnsafeMemberError(f"{name!r}: NUL byte in name")
    if name.startswith("/"):
        raise UnsafeMemberError(f"{name!r}: absolute path")
    parts = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise UnsafeMemberError(f"{name!r}: '..' component")
        parts.append(part)
    return "/".join(parts)


@dataclass
class MemberChecker:
    """Checks members in archive order; remembers what earlier members created."""

    symlinks: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)
    dirs: set[str] = field(default_factory=set)

    def check(self, member: tarfile.TarInfo) -> MemberPlan | None:
        """The plan for ``member``; ``None`` for the root entry (``./``), which creates nothing."""
        rel = normalize_member_name(member.name)
        if not rel:
            if not member.isdir():
                raise UnsafeMemberError(f"{member.name!r}: the root must be a directory")
            return None
        self._check_parents(member.name, rel)
        mode = member.mode & 0o777  # no setuid/setgid/sticky from a tarball
        if member.isdir():
            if rel in self.files or rel in self.symlinks:
                raise UnsafeMemberError(f"{member.name!r}: directory over an earlier file or symlink")
            self.dirs.add(rel)
            return MemberPlan("dir", rel, mode, float(member.mtime))
        if rel in self.dirs:
            raise UnsafeMemberError(f"{member.name!r}: non-directory over an earlier directory")
        if member.isreg():
            self.symlinks.discard(rel)
            self.files.add(rel)
            return MemberPlan("file", rel, mode, float(member.mtime), size=member.size)
        if member.issym():
            if "\x00" in member.linkname or not member.linkname:
                raise UnsafeMemberError(f"{member.name!r}: empty or NUL symlink target")
            self.files.discard(rel)
            self.symlinks.add(rel)
            return MemberPlan("symlink", rel, 0o777, float(member.mtime), link_target=member.linkname)
        if member.islnk():
            try:
                target = normalize_member_name(member.linkname)
            except UnsafeMemberError as exc:
                raise UnsafeMemberError(f"{member.name!r}: hard link out of the tree ({exc})") from exc
            if target not in self.files:
                raise UnsafeMemberError(
                    f"{member.name!r}: hard link to {member.linkname!r}, which is not an earlier regular file"
                )
            self.symlinks.discard(rel)
            self.files.add(rel)
            return MemberPlan("hardlink", rel, mode, float(member.mtime), link_target=target)
        kind = {
            tarfile.CHRTYPE: "character device",
            tarfile.BLKTYPE: "block device",
            tarfile.FIFOTYPE: "fifo",
        }.get(member.type, f"member type {member.type!r}")
        raise UnsafeMemberError(f"{member.name!r}: {kind} not allowed")

    def _check_parents(self, name: str, rel: str) -> None:
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in self.symlinks:
                raise UnsafeMemberError(f"{name!r}: goes through the symlink {parent!r}")
            if parent in self.files:
                raise UnsafeMemberError(f"{name!r}: goes through the file {parent!r}")
