"""In-process fault injection for virtfw: run one virtfw command with its Nth file write,
removal, changing tool call or netlink change made to fail.

Run inside the test's namespace, as a script or a module::

    ip netns exec NS python3 tests/helpers/inject_faults.py SPEC -- <virtfw args>
    python3 -m helpers.inject_faults SPEC -- <virtfw args>     (tests/ on sys.path)

SPEC is one of

* ``count``: no fault; every fault point the command passes is recorded;
* ``write:N:ENOSPC`` / ``write:N:EROFS``: the Nth file write fails. A write is one file
  written by ``virtfw.statefiles`` (``write_atomic``, and each file of ``write_many``),
  counted where every one of them starts: ``statefiles.temp_file``. EROFS fails there
  (creating the temp file), ENOSPC once the temp file exists, at its first ``write``,
  as a full disk does, so the writer's clean-up of its temp file is exercised too;
* ``remove:N:EROFS``: the Nth ``Path.unlink`` (status files, definitions, dnsmasq files);
* ``KIND:N:ERRNO:stuck`` (``write`` or ``remove``): as above, and every file write and
  removal after it fails the same way, as on a file system that went read-only (or a
  directory that stopped granting access) at that instant, not just for one call;
* ``tool:N``: the Nth changing tool call fails without running: ``Runner.run`` with
  ``change=True`` and ``Runner.run_file`` (queries do not count), raising the
  ``ToolError`` the runner raises for a failed tool (or, for ``check=False``, returning
  the failed ``Result`` it returns then); dnsmasq's start counts too (it fails as a
  dnsmasq that cannot start does, exit status 1);
* ``netlink:N``: the Nth changing pyroute2 call (``link``/``addr`` add, set, del) raises
  ``NetlinkError(EPERM)``.

With ``VIRTFW_FAULT_LOG=PATH`` the points passed are written to PATH as JSON at exit:
``{"points": [{"kind", "n", "what"}...], "injected": {...} | null}``, so a test first
counts a command's points, then injects at each one and can say what each one was.
Nothing is patched outside this process; the firewall tools run for real.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import sys
from dataclasses import dataclass, field
from typing import Any, Self

ROOT = pathlib.Path(__file__).resolve().parents[2]
KINDS = ("write", "remove", "tool", "netlink")
FILE_KINDS = ("write", "remove")
CHANGING_NETLINK = {"add", "set", "del", "delete", "remove", "replace", "change"}


@dataclass
class Spec:
    kind: str | None = None  # None: count only
    n: int = 0
    error: int = errno.EIO
    stuck: bool = False  # every file write and removal after the Nth fails too

    @classmethod
    def parse(cls, text: str) -> Spec:
        if text == "count":
            return cls()
        kind, _, rest = text.partition(":")
        number, _, name = rest.partition(":")
        name, _, mode = name.partition(":")
        if kind not in KINDS or not number.isdigit() or int(number) < 1:
            raise SystemExit(f"bad fault spec {text!r}")
        if mode not in ("", "stuck") or (mode and kind not in FILE_KINDS):
            raise SystemExit(f"bad mode in fault spec {text!r}")
        code = getattr(errno, name or "EIO", None)
        if not isinstance(code, int):
            raise SystemExit(f"bad errno in fault spec {text!r}")
        return cls(kind, int(number), code, mode == "stuck")


@dataclass
class Recorder:
    spec: Spec
    points: list[dict[str, Any]] = field(default_factory=list)
    injected: dict[str, Any] | None = None

    def passes(self, kind: str, what: str) -> bool:
        """Record a fault point; true when this is the one to fail."""
        n = 1 + sum(1 for point in self.points if point["kind"] == kind)
        point = {"kind": kind, "n": n, "what": what}
        self.points.append(point)
        if self.spec.kind == kind and self.spec.n == n:
            self.injected = point
            return True
        return self.spec.stuck and self.injected is not None and kind in FILE_KINDS

    def dump(self) -> None:
        path = os.environ.get("VIRTFW_FAULT_LOG")
        if path:
            with open(path, "w") as handle:
                json.dump({"points": self.points, "injected": self.injected}, handle, indent=1)


def os_error(code: int, path: object) -> OSError:
    return OSError(code, os.strerror(code), str(path))


class _FullDisk:
    """A temp file's handle on a full disk: the first write fails."""

    def __init__(self, handle: Any, code: int, path: str) -> None:
        self._handle = handle
        self._code = code
        self._path = path

    def write(self, _text: str) -> int:
        raise os_error(self._code, self._path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def patch_writes(rec: Recorder) -> None:
    from virtfw import statefiles

    real_temp_file = statefiles.temp_file
    real_fdopen = os.fdopen
    doomed: dict[int, str] = {}

    def temp_file(path: pathlib.Path) -> tuple[int, str]:
        hit = rec.passes("write", str(path))
        if hit and rec.spec.error != errno.ENOSPC:
            raise os_error(rec.spec.error, str(path.parent))
        fd, tmp = real_temp_file(path)
        if hit:
            doomed[fd] = tmp
        return fd, tmp

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        handle = real_fdopen(fd, *args, **kwargs)
        if fd in doomed:
            return _FullDisk(handle, rec.spec.error, doomed.pop(fd))
        return handle

    statefiles.temp_file = temp_file  # type: ignore[assignment]
    os.fdopen = fdopen  # type: ignore[assignment]


def patch_removes(rec: Recorder) -> None:
    real_unlink = pathlib.Path.unlink

    def unlink(self: pathlib.Path, missing_ok: bool = False) -> None:
        present = self.exists() or self.is_symlink()  # removing nothing is no change
        if present and rec.passes("remove", str(self)):
            raise os_error(rec.spec.error, self)
        real_unlink(self, missing_ok=missing_ok)

    pathlib.Path.unlink = unlink  # type: ignore[method-assign]


def patch_tools(rec: Recorder) -> None:
    import subprocess

    from virtfw.errors import ToolError
    from virtfw.rules.runner import Result, Runner

    real_run = Runner.run
    real_run_file = Runner.run_file
    real_subprocess_run = subprocess.run

    def failed(argv: list[str], check: bool) -> Result:
        if check:
            raise ToolError(argv, 1, "injected failure")
        return Result(1, "", "injected failure")

    def run(self: Runner, argv: list[str], **kwargs: Any) -> Result:
        if kwargs.get("change", True) and not self.dry_run and rec.passes("tool", shown(argv, kwargs.get("stdin"))):
            self.log.append(argv)
            return failed(argv, kwargs.get("check", True))
        return real_run(self, argv, **kwargs)

    def run_file(self: Runner, argv: list[str], text: str, **kwargs: Any) -> Result:
        if not self.dry_run and rec.passes("tool", shown([*argv, "FILE"], text)):
            self.log.append(argv)
            return failed(argv, kwargs.get("check", True))
        return real_run_file(self, argv, text, **kwargs)

    def subprocess_run(argv: Any, *args: Any, **kwargs: Any) -> Any:
        dnsmasq = isinstance(argv, list) and argv and os.path.basename(str(argv[0])) == "dnsmasq"
        if dnsmasq and rec.passes("tool", " ".join(map(str, argv))):
            return subprocess.CompletedProcess(argv, 1, "", "dnsmasq: injected failure\n")
        return real_subprocess_run(argv, *args, **kwargs)

    Runner.run = run  # type: ignore[method-assign]
    Runner.run_file = run_file  # type: ignore[method-assign]
    subprocess.run = subprocess_run  # type: ignore[assignment]


def shown(argv: list[str], stdin: str | None) -> str:
    """A tool call in one line: its argv and the first line of its input."""
    text = " ".join(argv)
    if stdin:
        lines = [line for line in stdin.splitlines() if line.strip()]
        text += f" <<< {lines[0][:70]}" + (f" (+{len(lines) - 1} lines)" if len(lines) > 1 else "")
    return text


class _Netlink:
    """virtfw's netlink socket, with its changing ``link``/``addr`` calls counted."""

    def __init__(self, ipr: Any, rec: Recorder, error: type[Exception]) -> None:
        self._ipr = ipr
        self._rec = rec
        self._error = error

    def _changing(self, method: str, command: str, *args: Any, **kwargs: Any) -> Any:
        if command in CHANGING_NETLINK:
            detail = " ".join(f"{key}={value}" for key, value in sorted(kwargs.items()))
            if self._rec.passes("netlink", f"ip {method} {command} {detail}"):
                raise self._error(errno.EPERM, "injected failure")
        return getattr(self._ipr, method)(command, *args, **kwargs)

    def link(self, command: str, *args: Any, **kwargs: Any) -> Any:
        return self._changing("link", command, *args, **kwargs)

    def addr(self, command: str, *args: Any, **kwargs: Any) -> Any:
        return self._changing("addr", command, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ipr, name)


def patch_netlink(rec: Recorder) -> None:
    from virtfw.net import bridge
    from virtfw.net.netlink import netlink_error

    real_ipr = bridge.Links.ipr

    def ipr(self: Any) -> Any:
        found = real_ipr.fget(self)
        if isinstance(found, _Netlink):
            return found
        wrapped = _Netlink(found, rec, netlink_error())
        self._ipr = wrapped
        return wrapped

    bridge.Links.ipr = property(ipr)  # type: ignore[method-assign]


def run_one(cli_main: Any, args: list[str]) -> dict[str, Any]:
    """One virtfw command in this process, as its own run would go: exit status and output."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["virtfw", *args]
    code: object = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli_main.main()
        except SystemExit as exc:
            code = exc.code
    if not isinstance(code, int):
        err.write(f"{code}\n" if code else "")
        code = 0 if code is None else 1
    return {"args": args, "returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def batch(cli_main: Any) -> None:
    """``batch``: a JSON list of argument lists on stdin, each run unfaulted in turn in this
    one process (setting up and reading back cost one interpreter start, not one per
    command); a JSON list of results on stdout. Stops after the first that fails."""
    results = []
    for args in json.load(sys.stdin):
        results.append(run_one(cli_main, args))
        if results[-1]["returncode"] != 0:
            break
    sys.__stdout__.write(json.dumps(results))


def main(argv: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from virtfw.cli import main as cli_main

    if argv == ["batch"]:
        batch(cli_main)
        return
    if len(argv) < 2 or argv[1] != "--":
        raise SystemExit("usage: inject_faults.py SPEC -- VIRTFW-ARGS... | inject_faults.py batch")
    rec = Recorder(Spec.parse(argv[0]))
    patch_writes(rec)
    patch_removes(rec)
    patch_tools(rec)
    patch_netlink(rec)
    sys.argv = ["virtfw", *argv[2:]]
    try:
        cli_main.main()
    finally:
        rec.dump()


if __name__ == "__main__":
    main(sys.argv[1:])
