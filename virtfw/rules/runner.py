"""Running external tools: argument vectors only, found on PATH, dry-run and verbose aware."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

from virtfw.errors import ToolError, VirtfwError


def find_tool(tool: str) -> str | None:
    """``tool``'s path on PATH: the first executable regular file, as ``shutil.which`` finds it
    (without importing shutil, and bz2, lzma, fnmatch behind it, into every command), but
    never in a relative folder (an empty PATH entry means the working directory, which is
    no place for root to pick up a firewall tool)."""
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if not os.path.isabs(folder):
            continue
        candidate = os.path.join(folder, tool)
        if os.access(candidate, os.X_OK) and os.path.isfile(candidate):
            return candidate
    return None


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Runner:
    """Runs commands; in dry-run mode changes are printed instead of run.

    Queries (``change=False``) still run in dry-run mode so the printed batch is the
    one that would really be applied; a query that cannot run (no tool, no privilege)
    is reported as a failed result, and callers treat that as "nothing present".
    """

    dry_run: bool = False
    verbose: bool = False
    log: list[list[str]] = field(default_factory=list)

    def which(self, tool: str) -> str:
        path = find_tool(tool)
        if path is None:
            raise VirtfwError(f"{tool} not found on PATH")
        return path

    def run(
        self,
        argv: list[str],
        *,
        stdin: str | None = None,
        change: bool = True,
        check: bool = True,
        quiet: bool = False,
    ) -> Result:
        self.log.append(argv)
        if change and self.dry_run:
            self._show(argv, stdin, sys.stdout)
            return Result(0, "", "")
        if self.verbose and not quiet:
            self._show(argv, stdin, sys.stderr)
        try:
            proc = subprocess.run(
                [self.which(argv[0]), *argv[1:]],
                input=stdin,
                capture_output=True,
                text=True,
                check=False,
            )
        except VirtfwError:
            if change or check:
                raise
            return Result(127, "", f"{argv[0]} not found on PATH")
        except OSError as exc:
            raise VirtfwError(f"cannot run {argv[0]}: {exc.strerror}") from exc
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise ToolError(argv, proc.returncode, proc.stderr or proc.stdout)
        return result

    def query(self, argv: list[str]) -> Result:
        """Read live state. A failure is an error, since acting on a wrong picture of
        the kernel would duplicate or flush rules; only a dry run (perhaps without
        privileges) takes a failed query as "nothing there"."""
        return self.run(argv, change=False, check=not self.dry_run)

    def run_file(self, argv: list[str], text: str, *, check: bool = True) -> Result:
        """Run ``argv`` with, appended, a path that reads ``text``.

        For tools that cannot be trusted with a batch on stdin: ``nft -j -f -`` consumes
        stdin trying to parse JSON and then applies nothing; given a path, nft opens it
        again for its second parser. The path is ``/proc/self/fd/N`` of an anonymous
        in-memory file (memfd) passed to the child: each open of it starts at the
        beginning, and nothing is left on disk whatever kills us (a temp file in /tmp
        outlived a SIGKILL). A tool's message naming that path and a line of it names
        the batch line's content instead (``name_batch_lines``).
        """
        if self.dry_run:
            self.log.append(argv)
            self._show([*argv, "FILE"], text, sys.stdout)
            return Result(0, "", "")
        try:
            fd = os.memfd_create("virtfw-batch", os.MFD_CLOEXEC)
        except (AttributeError, OSError) as exc:  # Linux before 3.17 only
            raise VirtfwError(f"cannot hold the {argv[0]} batch in memory: {exc}") from None
        try:
            data = text.encode()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            path = f"/proc/self/fd/{fd}"  # resolved in the child, which has fd under the same number
            if self.verbose:
                self._show([*argv, path], text, sys.stderr)
            result = self._run_passing(argv, path, fd)
        finally:
            os.close(fd)
        result.stderr = name_batch_lines(result.stderr, path, text)
        result.stdout = name_batch_lines(result.stdout, path, text)
        if check and result.returncode != 0:
            raise ToolError(argv, result.returncode, result.stderr or result.stdout)
        return result

    def _run_passing(self, argv: list[str], path: str, fd: int) -> Result:
        self.log.append([*argv, path])
        try:
            proc = subprocess.run(
                [self.which(argv[0]), *argv[1:], path],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
                pass_fds=(fd,),
            )
        except OSError as exc:
            raise VirtfwError(f"cannot run {argv[0]}: {exc.strerror}") from exc
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def announce(self, action: str, detail: str = "") -> bool:
        """An action virtfw takes itself (netlink, a sysctl, a file, a signal), spelled as the
        command that does the same: printed instead of taken in a dry run (returns False),
        shown on stderr as it is taken with -v. ``detail``: a file's content, shown after."""
        if self.dry_run or self.verbose:
            self._show(action.split(" "), detail or None, sys.stdout if self.dry_run else sys.stderr)
        return not self.dry_run

    @staticmethod
    def _show(argv: list[str], stdin: str | None, stream) -> None:
        print("+ " + " ".join(argv), file=stream)
        if stdin:
            stream.write(stdin if stdin.endswith("\n") else stdin + "\n")


_MAX_SHOWN = 160  # characters of a batch line quoted in a message


def name_batch_lines(message: str, path: str, text: str) -> str:
    """``PATH:LINE:COLUMNS: Error: ...`` (nft's form) as ``batch line LINE (CONTENT): Error:
    ...``: the path of the batch means nothing to the user and its line number little,
    the rule it refers to does. Any other mention of the path becomes "the batch"."""
    if path not in message:
        return message
    lines = text.splitlines()

    def located(match: re.Match[str]) -> str:
        number = int(match.group(1))
        content = lines[number - 1].strip() if 0 < number <= len(lines) else ""
        if len(content) > _MAX_SHOWN:
            content = content[: _MAX_SHOWN - 3] + "..."
        return f"batch line {number} ({content}): " if content else f"batch line {number}: "

    message = re.sub(re.escape(path) + r":(\d+)(?::[0-9-]+)?:\s*", located, message)
    return message.replace(path, "the batch")
