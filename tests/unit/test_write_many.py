"""``statefiles.write_many`` is all or none, at every rename too.

Files are staged first, then renamed one by one; a rename made to fail at each position
in turn (``os.replace`` failing as EROFS/EACCES/EXDEV do) leaves every target as it was:
the old content where there was a file, no file where there was none, and no temp file
or kept copy beside them. A directory or a symbolic link where a target goes is refused
before anything is renamed, and the link is not followed.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from virtfw.errors import VirtfwError
from virtfw.statefiles import write_many


def listing(folder: Path) -> dict[str, str]:
    """Every entry of the folder (temp files included) with its content or kind."""
    out = {}
    for entry in sorted(os.listdir(folder)):
        path = folder / entry
        if path.is_symlink():
            out[entry] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            out[entry] = "<dir>"
        else:
            out[entry] = path.read_text()
    return out


def setup(folder: Path, count: int) -> list[tuple[Path, str]]:
    """COUNT targets, every other one already there with old content."""
    folder.mkdir(mode=0o700)
    items = []
    for n in range(count):
        path = folder / f"f{n}.json"
        if n % 2 == 0:
            path.write_text(f"old {n}\n")
        items.append((path, f"new {n}\n"))
    return items


class FailingReplace:
    """os.replace failing at its Nth call (counting from 1) with ERRNO, as it would."""

    def __init__(self, n: int, code: int) -> None:
        self.real = os.replace
        self.n = n
        self.code = code
        self.calls = 0

    def __call__(self, src, dst, *args, **kwargs):
        self.calls += 1
        if self.calls == self.n:
            raise OSError(self.code, os.strerror(self.code), str(dst))
        return self.real(src, dst, *args, **kwargs)


@pytest.mark.parametrize("durable", [False, True])
@pytest.mark.parametrize("count", [3, 9])  # 9: the many-files path (one sync)
@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EXDEV])
def test_a_rename_failing_at_any_position_leaves_every_file_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int, durable: bool, code: int
) -> None:
    for position in range(1, count + 1):
        folder = tmp_path / f"at{position}"
        items = setup(folder, count)
        before = listing(folder)
        failing = FailingReplace(position, code)
        monkeypatch.setattr(os, "replace", failing)
        with pytest.raises(VirtfwError) as raised:
            write_many(items, durable=durable)
        monkeypatch.setattr(os, "replace", failing.real)
        assert listing(folder) == before, f"a rename failing at {position} of {count} left a mix"
        assert os.strerror(code) in str(raised.value)
        assert failing.calls >= position


def test_without_a_failure_every_file_is_new_and_nothing_else_is_left(tmp_path: Path) -> None:
    items = setup(tmp_path / "d", 4)
    write_many(items)
    assert listing(tmp_path / "d") == {path.name: text for path, text in items}
    assert all((path.stat().st_mode & 0o777) == 0o600 and path.stat().st_nlink == 1 for path, _ in items)


def test_a_directory_in_a_targets_place_is_refused_before_any_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = setup(tmp_path / "d", 4)
    (tmp_path / "d" / "f3.json").mkdir()
    before = listing(tmp_path / "d")
    failing = FailingReplace(0, 0)  # counts only
    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(VirtfwError, match=r"f3\.json: a directory is in its place"):
        write_many(items)
    assert failing.calls == 0
    assert listing(tmp_path / "d") == before


def test_a_symbolic_link_in_a_targets_place_is_refused_and_not_followed(tmp_path: Path) -> None:
    items = setup(tmp_path / "d", 4)
    outside = tmp_path / "outside.json"
    outside.write_text("not virtfw's\n")
    (tmp_path / "d" / "f1.json").symlink_to(outside)
    before = listing(tmp_path / "d")
    with pytest.raises(VirtfwError, match=r"f1\.json: a symbolic link is in its place"):
        write_many(items)
    assert listing(tmp_path / "d") == before
    assert outside.read_text() == "not virtfw's\n"


def test_a_failing_put_back_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the put-back itself fail (the disk went read-only for good), the error says
    which file stays new, rather than claiming all is as it was."""
    items = setup(tmp_path / "d", 3)
    real = os.replace
    calls = []

    def replace(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) >= 2:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(VirtfwError, match=r"could not put back the old .*f0\.json"):
        write_many(items)
