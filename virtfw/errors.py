"""The one exception type that reaches users as a single ``error:`` line."""


class VirtfwError(Exception):
    """A request that cannot be carried out; the message is shown as is."""


class ToolError(VirtfwError):
    """An external firewall or network tool failed."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr.strip()
        first = self.stderr.splitlines()[0] if self.stderr else f"exit status {returncode}"
        super().__init__(f"{argv[0]} failed: {first}")
