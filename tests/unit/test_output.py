"""Tables on a terminal: every value whole whatever the width, and no escape codes under NO_COLOR."""

import fcntl
import os
import struct
import subprocess
import sys
import termios

from helpers.nsutil import ROOT

ROWS = [
    [
        "2026-12-02 15:21:22",
        "52:54:00:6b:3c:58",
        "192.168.122.230",
        "a-guest-with-a-long-hostname",
        "01:52:54:00:6b:3c:58",
    ]
]
HEADERS = ["Expiry Time", "MAC address", "IP address", "Hostname", "Client ID"]
SCRIPT = f"from virtfw.cli.output import table; table({HEADERS!r}, {ROWS!r})"


def on_terminal(columns: int, **env: str) -> str:
    """What ``table`` prints on a pseudo-terminal ``columns`` wide."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    clean = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES", "TERM")}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=follower, stderr=subprocess.PIPE, cwd=ROOT,
        env={**clean, "TERM": "xterm-256color", "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks).decode()


def test_a_narrow_terminal_cuts_no_value() -> None:
    text = on_terminal(80)
    for value in ROWS[0]:
        assert value in text, f"{value!r} was cut or wrapped:\n{text}"
    assert "…" not in text


def test_a_wide_terminal_gets_rich_and_no_color_gets_none() -> None:
    styled = on_terminal(200)
    assert "\x1b[" in styled, "control: a wide terminal gets rich's bold headers"
    for value in ROWS[0]:
        assert value in styled
    plain = on_terminal(200, NO_COLOR="1")
    assert "\x1b[" not in plain, f"NO_COLOR is not honoured: {plain!r}"
    assert all(value in plain for value in ROWS[0])
