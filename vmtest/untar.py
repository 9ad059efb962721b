"""Unpacking an archive that came from a guest: nothing may land outside its folder.

Python >= 3.11.4 (and 3.12) has tarfile's 'data' filter; Debian 12's own Python is 3.11.2,
which has no `filter=` argument at all. There each member is checked here the way the
'data' filter checks it (PEP 706), and extracted one at a time, so a symlink unpacked
earlier is followed when a later member's path is resolved.
"""

from __future__ import annotations

import copy
import os
import stat
import tarfile
from pathlib import Path

HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


class UnsafeMember(tarfile.TarError):
    """A member that would write outside the folder, or a device file."""


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _check_name(name: str) -> None:
    # The 'data' filter would strip a leading '/' and allow a '..' that stays inside;
    # neither comes from `tar -C / -cf - PATH`, so either is refused on every Python.
    if os.path.isabs(name) or name.startswith("/"):
        raise UnsafeMember(f"{name!r} is an absolute path")
    if ".." in Path(name).parts:
        raise UnsafeMember(f"{name!r} has a '..' component")


def checked(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """A copy of member that is safe to extract below dest (its real path): no absolute
    name, no '..', no link that leaves dest, no device or FIFO, no setuid/setgid bits or
    group/other write, owned by whoever unpacks. UnsafeMember otherwise."""
    name = member.name
    _check_name(name)
    target = os.path.realpath(os.path.join(dest, name))
    if not _inside(target, dest):
        raise UnsafeMember(f"{name!r} would be written to {target}, outside {dest}")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeMember(f"{name!r} is a device file or FIFO")
    if member.issym() or member.islnk():
        if os.path.isabs(member.linkname):
            raise UnsafeMember(f"{name!r} links to the absolute path {member.linkname!r}")
        base = os.path.dirname(os.path.join(dest, name)) if member.issym() else dest
        linked = os.path.realpath(os.path.join(base, member.linkname))
        if not _inside(linked, dest):
            raise UnsafeMember(f"{name!r} links to {linked}, outside {dest}")
    safe = copy.copy(member)
    mode = member.mode & 0o777 & ~(stat.S_IWGRP | stat.S_IWOTH)
    if member.isdir():
        mode = 0o755
    elif member.isreg() or member.islnk():
        mode = (mode | 0o600) if mode & 0o100 else (mode | 0o600) & ~0o111
    safe.mode = mode
    safe.uid, safe.gid = os.getuid(), os.getgid()
    safe.uname = safe.gname = ""
    return safe


def extract_all(tar: tarfile.TarFile, dest: Path, *, use_filter: bool | None = None,
                members: list[tarfile.TarInfo] | None = None) -> None:
    """Unpack members (default: all) of tar below dest, or raise tarfile.TarError
    (UnsafeMember for a member that is not safe) before writing that member.
    use_filter: tarfile's own 'data' filter (default: where this Python has it)."""
    if use_filter is None:
        use_filter = HAS_DATA_FILTER
    if members is None:
        members = tar.getmembers()
    if use_filter:
        for member in members:
            _check_name(member.name)
        tar.extractall(dest, members=members, filter="data")
        return
    root = os.path.realpath(dest)
    for member in members:
        tar.extract(checked(member, root), root, set_attrs=True, numeric_owner=True)
