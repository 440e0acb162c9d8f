"""What a command imports: only what it uses (start-up time), and nothing broken by that."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_links_import_only_the_netlink_modules_they_use() -> None:
    """Netlink needs pyroute2's message classes alone: not its __init__ (ndb, ipdb, conntrack,
    ...), nor IPRoute's asyncio machinery."""
    out = run_python(
        "import sys\n"
        "from virtfw.net import netlink\n"
        "socket = netlink.Netlink()\n"
        "socket.close()\n"
        "print(netlink.netlink_error().__name__, sorted(m for m in ('pyroute2.ndb', 'pyroute2.ipdb', "
        "'pyroute2.conntrack', 'pyroute2.iproute', 'asyncio', 'unittest') if m in sys.modules))\n"
    )
    assert out == "NetlinkError []"


def test_the_deferred_package_is_whole_for_anyone_else() -> None:
    """Other code in the same process still gets every public name of pyroute2, the same classes."""
    out = run_python(
        "from virtfw.net import netlink\n"
        "error = netlink.netlink_error()\n"
        "import pyroute2\n"
        "from pyroute2 import NDB, IPRoute, NetlinkError\n"
        "print(NetlinkError is error, NDB.__name__, IPRoute.__name__, bool(pyroute2.__version__))\n"
    )
    assert out == "True NDB IPRoute True"


def test_a_package_imported_before_is_left_as_it_is() -> None:
    out = run_python(
        "import pyroute2\nfrom virtfw.net import netlink\nprint(netlink.netlink_error() is pyroute2.NetlinkError)\n"
    )
    assert out == "True"


@pytest.mark.parametrize("command", [["--help"], ["nwfilter-list", "--help"]])
def test_help_imports_no_netlink_xml_or_rich(command: list[str]) -> None:
    out = run_python(
        "import sys\n"
        "from virtfw.cli.main import main\n"
        f"sys.argv = ['virtfw', *{command!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & {'pyroute2', 'lxml', 'rich'}))\n"
    )
    assert out.splitlines()[-1] == "LOADED []"


def test_commands_import_none_of_the_heavy_stdlib_helpers() -> None:
    """asyncio (pyroute2's IPRoute), tempfile and shutil (and random, bz2, lzma behind them),
    importlib.resources (and zipfile): each replaced by a few lines of virtfw's own. What the
    interpreter's site (.pth files) loaded before is not virtfw's doing and not counted."""
    heavy = ("asyncio", "tempfile", "shutil", "importlib.resources", "zipfile", "unittest", "ssl", "random")
    out = run_python(
        "import sys\n"
        "before = set(sys.modules)\n"
        "import virtfw.cli.main, virtfw.net.manager, virtfw.net.dnsmasq, virtfw.filter.bindings\n"
        "import virtfw.rules.nft.network, virtfw.rules.nft.filter\n"
        "import virtfw.rules.xtables.network, virtfw.rules.xtables.filter\n"
        "from virtfw import config\n"
        "from virtfw.net import netlink\n"
        "netlink.Netlink().close()\n"
        "config.shipped_dir()\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules and m not in before))\n"
    )
    assert out == "[]"
