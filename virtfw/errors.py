"""The one exception type that reaches users as a single ``error:`` line."""


def one_line(message: object) -> str:
    """A message as one line: control characters a value carried (a newline in an XML
    attribute, say) are shown escaped, so the line can be neither split nor forged."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))


class VirtfwError(Exception):
    """A request that cannot be carried out; the message is one line (see ``one_line``)."""

    def __init__(self, message: object = "") -> None:
        super().__init__(one_line(message))


class ToolError(VirtfwError):
    """An external firewall or network tool failed."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr.strip()
        first = self.stderr.splitlines()[0] if self.stderr else f"exit status {returncode}"
        super().__init__(f"{argv[0]} failed: {first}")
