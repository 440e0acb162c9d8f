"""Status files and the lock: atomic writes (temp file, rename), 0600/0700.

Two kinds of file, two promises:

* **Configuration** (definitions, autostart links, binding records for boot) must
  survive a power loss: written to a temp file, fsync'ed, renamed, the folder fsync'ed.
* **Status** (what is installed now, in the state dir) describes kernel state, which a
  power loss or reboot discards as well; it only has to survive the process being
  killed, and a rename does that alone: readers see the old file or the new one.
  Status writes are therefore not fsync'ed (``durable=False``); a status directory is
  handled through :class:`StatusDir`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from virtfw.errors import VirtfwError

T = TypeVar("T")


def check_trusted_dir(path: Path, what: str = "directory") -> None:
    """Refuse a directory someone else controls: what it holds decides what root writes,
    runs and removes. A symbolic link, another owner, or write access for group or others
    (a shared /tmp-like folder included) is refused, never followed or chmod'ed. Its
    ancestors must be owned by root or by you, and writable by others only when sticky
    (as /tmp is), so that nobody else can swap the directory for another."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise VirtfwError(f"cannot inspect {what} {path}: {exc.strerror}") from None
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            raise VirtfwError(f"{what} {path} is a symbolic link: refused (give the directory itself)")
        if not stat.S_ISDIR(info.st_mode):
            raise VirtfwError(f"{what} {path} is not a directory")
        if info.st_uid != os.geteuid():
            raise VirtfwError(
                f"{what} {path} belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}): refused, "
                "since its owner could change what virtfw reads, writes and removes"
            )
        if info.st_mode & 0o022:
            raise VirtfwError(
                f"{what} {path} is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}): "
                "refused; use a directory only you can write to"
            )
    for parent in Path(os.path.abspath(path)).parents:
        try:
            above = os.stat(parent)  # an ancestor may be a link (/var/run): where it leads counts
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise VirtfwError(f"cannot inspect {parent}, above {what} {path}: {exc.strerror}") from None
        if above.st_uid not in (0, os.geteuid()) or (above.st_mode & 0o022 and not above.st_mode & stat.S_ISVTX):
            raise VirtfwError(
                f"{what} {path} lies in {parent}, which another user controls: refused "
                "(its owner could put another directory in its place)"
            )


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    """The directory, made with MODE if it is missing (only then is its mode set, through a
    descriptor that cannot follow a link), and checked to be one nobody else controls."""
    check_trusted_dir(path)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    else:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, mode)  # exactly MODE, whatever the umask took away: we made it
        finally:
            os.close(fd)
    check_trusted_dir(path)
    return path


_TEMP_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def temp_file(path: Path) -> tuple[int, str]:
    """A new file beside ``path`` to write before renaming it there: its descriptor and name.

    Named as ``tempfile.mkstemp`` names one (``TEMP_NAME``: "." + the target's name + "." +
    8 characters), opened the same way (created here, 0600, never through a symlink), without
    importing tempfile (and random, shutil, bz2, lzma behind it) into every command.
    """
    for _ in range(100):
        suffix = "".join(_TEMP_CHARACTERS[byte % len(_TEMP_CHARACTERS)] for byte in os.urandom(8))
        name = str(path.parent / f".{path.name}.{suffix}")
        try:
            return os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp name beside {path}")


@contextmanager
def private_dir(parent: Path) -> Iterator[Path]:
    """A new directory in ``parent`` that only we can enter (0700, made by us, never a
    directory that was there before), removed with all it holds when the block ends,
    however it ends (an exception, Ctrl-C). ``parent`` itself is made 0700 if missing and
    refused when someone else controls it (``ensure_dir``); it is removed too once empty.

    For a file handed to another program (an editor) by path: nobody else can read it,
    put a link in its place or swap the directory, as they could in a shared /tmp.
    """
    for _ in range(100):
        ensure_dir(parent)
        suffix = "".join(_TEMP_CHARACTERS[byte % len(_TEMP_CHARACTERS)] for byte in os.urandom(8))
        path = parent / suffix
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        except FileNotFoundError:
            continue  # another edit ending removed the empty parent meanwhile: make it again
        break
    else:
        raise FileExistsError(f"no free directory name in {parent}")
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    failed = True
    try:
        os.fchmod(fd, 0o700)  # exactly, whatever the umask took away: we made it
        yield path
        failed = False
    finally:
        try:
            _empty_dir(fd)
            os.rmdir(path)
        except OSError as exc:
            if not failed:  # else the error in flight says more
                raise VirtfwError(f"cannot remove {path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        try:
            os.rmdir(parent)
        except OSError:
            pass  # another edit's directory is in it, or it is gone: either is fine


def _empty_dir(fd: int) -> None:
    """Remove everything in the directory open at ``fd``, following no link."""
    for entry in os.listdir(fd):
        if stat.S_ISDIR(os.lstat(entry, dir_fd=fd).st_mode):
            sub = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            try:
                _empty_dir(sub)
            finally:
                os.close(sub)
            os.rmdir(entry, dir_fd=fd)
        else:
            os.unlink(entry, dir_fd=fd)


def write_atomic(path: Path, text: str, mode: int = 0o600, *, durable: bool = True) -> None:
    """Readers see the old file or the new one, never a torn one; with ``durable``, even
    across a power loss."""
    ensure_dir(path.parent)
    try:
        fd, tmp = temp_file(path)
    except OSError as exc:
        raise VirtfwError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        if durable:
            _sync_folder(path.parent)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise VirtfwError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def _sync_folder(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def json_text(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def write_json(path: Path, data: dict, *, durable: bool = True) -> None:
    write_atomic(path, json_text(data), durable=durable)


def write_many(items: list[tuple[Path, str]], mode: int = 0o600, *, durable: bool = True) -> None:
    """Many files at once, all or none.

    Every file is written to its temp name first (a full disk stops it there, changing no
    file); then each target is checked (a directory or a symbolic link in its place is
    refused, before any rename) and the old file's content kept under a second name (a hard
    link); only then is each temp file renamed. A rename that fails puts the targets
    already renamed back (the kept file, or no file where there was none), so the files
    are all new or all old; temp files and kept links go either way.

    With ``durable``, many files share one ``sync`` (a thousand bindings saved one fsync at
    a time cost seconds); a few are synced one by one.
    """
    many = len(items) >= 8
    staged: list[tuple[str, Path]] = []
    kept: dict[Path, str | None] = {}  # target -> hard link to its old file, None: none was there
    done: list[Path] = []
    where: Path | None = None
    try:
        for path, text in items:
            where = path
            ensure_dir(path.parent)
            fd, tmp = temp_file(path)
            staged.append((tmp, path))
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                if durable and not many:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.chmod(tmp, mode)
        for _, path in staged:
            where = path
            kept[path] = _keep_old(path)
        if durable and many:
            os.sync()
        for tmp, path in staged:
            where = path
            os.replace(tmp, path)
            done.append(path)
    except BaseException as exc:
        trouble = _put_back(done, kept)
        for tmp, _ in staged:
            _unlink_quietly(tmp)
        for link in kept.values():
            if link is not None:
                _unlink_quietly(link)
        if isinstance(exc, (OSError, VirtfwError)):
            shown = where if where is not None else items[0][0]
            reason = str(exc) if isinstance(exc, VirtfwError) else f"cannot write {shown}: {exc.strerror or exc}"
            if trouble:
                reason += f"; and {trouble}"
            raise VirtfwError(reason) from None
        raise
    for link in kept.values():
        if link is not None:
            _unlink_quietly(link)
    if durable:
        for folder in {path.parent for path, _ in items}:
            _sync_folder(folder)


def _keep_old(path: Path) -> str | None:
    """A second name (hard link) for the file at ``path``, so that it can be put back;
    None when there is none. A directory or a symbolic link there is refused."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(info.st_mode):
        raise VirtfwError(f"cannot write {path}: a directory is in its place")
    if stat.S_ISLNK(info.st_mode):
        raise VirtfwError(f"cannot write {path}: a symbolic link is in its place (refused, not followed)")
    for _ in range(100):
        suffix = "".join(_TEMP_CHARACTERS[byte % len(_TEMP_CHARACTERS)] for byte in os.urandom(8))
        link = str(path.parent / f".{path.name}.{suffix}")  # a TEMP_NAME: swept if we are killed
        try:
            os.link(path, link, follow_symlinks=False)
        except FileExistsError:
            continue
        return link
    raise FileExistsError(f"no free temp name beside {path}")


def _put_back(done: list[Path], kept: dict[Path, str | None]) -> str:
    """The targets renamed so far as they were; what could not be put back, if anything."""
    failed = []
    for path in reversed(done):
        link = kept.get(path)
        try:
            if link is None:
                os.unlink(path)
            else:
                os.replace(link, path)
                kept[path] = None  # it is the file again: not a link to remove
        except OSError as exc:
            failed.append(f"{path} ({exc.strerror or exc})")
    return f"could not put back the old {', '.join(failed)}" if failed else ""


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise VirtfwError(f"status file {path} is unreadable: {exc}") from None


def remove_file(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise VirtfwError(f"cannot remove {path}: {exc.strerror}") from None


@dataclass
class StatusDir:
    """The status files of one kind of owner (networks, bindings), and their backends' base
    records: ``FOLDER/NAME.json`` each, ``STATE/PREFIX-BACKEND.json`` per backend.

    In a dry run nothing is written or removed, so ``--dry-run`` changes no file.
    """

    folder: Path
    base_prefix: str  # "firewall" (networks), "nwfilter" (bindings)
    dry_run: bool = False

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def base_path(self, backend: str) -> Path:
        return self.folder.parent / f"{self.base_prefix}-{backend}.json"

    def names(self) -> list[str]:
        """Names with a status file, sorted; one directory listing, no file read."""
        if not self.folder.is_dir():
            return []
        return sorted(name[:-5] for name in os.listdir(self.folder) if name.endswith(".json") and name[0] != ".")

    def load(self, name: str) -> dict | None:
        return read_json(self.path(name))

    def read_each(self, read: Callable[[str], T | None]) -> tuple[list[T], dict[str, str]]:
        """``read`` of every name with a status file: what it gave, and the names it
        refused with why, so that one unreadable file hides no other."""
        found: list[T] = []
        unreadable: dict[str, str] = {}
        for name in self.names():
            try:
                item = read(name)
            except VirtfwError as exc:
                unreadable[name] = str(exc)
                continue
            if item is not None:
                found.append(item)
        return found, unreadable

    def load_all(self) -> list[dict]:
        found = (self.load(name) for name in self.names())
        return [status for status in found if status]

    def save(self, name: str, status: dict) -> None:
        if not self.dry_run:
            write_json(self.path(name), status, durable=False)

    def save_many(self, items: list[tuple[str, dict]]) -> None:
        if not self.dry_run:
            write_many([(self.path(name), json_text(status)) for name, status in items], durable=False)

    def drop(self, name: str) -> None:
        if not self.dry_run:
            remove_file(self.path(name))

    def load_base(self, backend: str) -> dict | None:
        return read_json(self.base_path(backend))

    def save_base(self, backend: str, base: dict | None) -> None:
        if self.dry_run:
            return
        if base is None:
            remove_file(self.base_path(backend))
        else:
            write_json(self.base_path(backend), base, durable=False)

    def drop_leftovers(self, names: list[str]) -> None:
        """Temp files of writes a killed process never renamed (one listing)."""
        if self.dry_run or not self.folder.is_dir():
            return
        prefixes = tuple(f".{name}.json." for name in names)
        for entry in os.listdir(self.folder):
            if entry.startswith(prefixes):
                remove_file(self.folder / entry)


# write_atomic's temp files (temp_file): "." + the target's name + "." + 8 random characters,
# the target being one of the kinds virtfw writes (status and base records, dnsmasq's files).
TEMP_NAME = re.compile(r"\.[^/]+\.(?:json|xml|conf|hostsfile|addnhosts|leases)\.[a-z0-9_]{8}")
# The one file written without the lock (the nft kernel features cache, which read-only
# commands such as verify refresh): its temp file may be a live writer's, so only one
# older than this is a leftover. A write takes milliseconds.
KERNEL_CACHE = "nft-kernel.json"
UNLOCKED_GRACE = 60.0


@contextmanager
def locked(state_dir: Path, *, dry_run: bool = False, config_dir: Path | None = None) -> Iterator[None]:
    """One lock for every changing command, so concurrent invocations serialize.

    Once it holds the lock, a command removes the temp files that writers killed before
    their rename left in the state dir and (given) the config dir, whose definitions and
    binding records are written under this lock too (``sweep_leftovers``); a dry run
    removes nothing, and creates nothing: no state dir, no lock file.
    """
    if dry_run:
        yield
        return
    try:
        # 0711: dnsmasq, which reads its files here as an unprivileged user, may pass through
        ensure_dir(state_dir, 0o711)
        handle = open(state_dir / "lock", "a+")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise VirtfwError(f"cannot open lock in {state_dir}: {exc.strerror}") from None
    with handle:
        os.chmod(handle.name, 0o600)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            acquired = time.time()
            sweep_leftovers(state_dir, acquired)
            if config_dir is not None:
                sweep_leftovers(config_dir, acquired)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sweep_leftovers(state_dir: Path, acquired: float) -> list[str]:
    """Remove the temp files of atomic writes that never reached their rename, in the
    state (or config) dir and its folders (networks, bindings, dnsmasq, nwfilter); returns
    their paths.

    Why this is safe: every writer of the state dir but one writes under the lock, and
    we hold it since ``acquired``, so a temp file modified before then belongs to a
    writer that was killed (a finished one renamed or removed its own); the kernel cache
    (``KERNEL_CACHE``), written without the lock, counts only after ``UNLOCKED_GRACE``.
    Only regular files whose name is ``TEMP_NAME`` are removed: nothing is followed
    (directories are opened with O_NOFOLLOW, entries inspected with lstat and removed
    relative to their directory's descriptor), so a symbolic link, another kind of file
    or a foreign name survives. Failing to inspect or remove one is not an error: the
    command goes on and the next one tries again.
    """
    removed: list[str] = []
    try:
        top = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return removed
    try:
        removed += _sweep_folder(top, str(state_dir), acquired)
        for entry in os.listdir(top):
            try:
                if not stat.S_ISDIR(os.lstat(entry, dir_fd=top).st_mode):
                    continue
                sub = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
            except OSError:
                continue
            try:
                removed += _sweep_folder(sub, os.path.join(state_dir, entry), acquired)
            finally:
                os.close(sub)
    finally:
        os.close(top)
    return removed


def _sweep_folder(folder: int, shown: str, acquired: float) -> list[str]:
    removed = []
    for entry in os.listdir(folder):
        if not TEMP_NAME.fullmatch(entry):
            continue
        limit = acquired - UNLOCKED_GRACE if entry.startswith(f".{KERNEL_CACHE}.") else acquired
        try:
            info = os.lstat(entry, dir_fd=folder)
            if not stat.S_ISREG(info.st_mode) or info.st_mtime >= limit:
                continue
            os.unlink(entry, dir_fd=folder)
        except OSError:
            continue
        removed.append(os.path.join(shown, entry))
    return removed
