"""Running external tools: argument vectors only, found on PATH, dry-run and verbose aware."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from virtfw.errors import ToolError, VirtfwError


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
        path = shutil.which(tool)
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
        """Run ``argv`` with the path of a temporary file holding ``text`` appended.

        For tools that cannot be trusted with a batch on stdin: ``nft -j -f -``
        consumes stdin trying to parse JSON and then applies nothing.
        """
        if self.dry_run:
            self.log.append(argv)
            self._show([*argv, "FILE"], text, sys.stdout)
            return Result(0, "", "")
        fd, path = tempfile.mkstemp(prefix="virtfw-", suffix=".batch")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            if self.verbose:
                self._show([*argv, path], text, sys.stderr)
            return self.run([*argv, path], change=False, check=check, quiet=True)
        finally:
            os.unlink(path)

    @staticmethod
    def _show(argv: list[str], stdin: str | None, stream) -> None:
        print("+ " + " ".join(argv), file=stream)
        if stdin:
            stream.write(stdin if stdin.endswith("\n") else stdin + "\n")
