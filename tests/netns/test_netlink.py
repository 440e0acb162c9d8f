"""virtfw's netlink socket against the kernel, read back with iproute2 (``ip -j``).

Each case runs its Python in a namespace of its own (``ip netns exec``), so the socket
it opens is that namespace's.
"""

from __future__ import annotations

import json
import sys
import textwrap

from tests.helpers.nsutil import Netns, netns


def in_ns(ns: Netns, code: str) -> str:
    """Run ``code`` (with ``nl``, an open Netlink, and ``NetlinkError`` defined) inside ``ns``."""
    prelude = "from virtfw.net.netlink import Netlink, netlink_error\nNetlinkError = netlink_error()\nnl = Netlink()\n"
    program = prelude + textwrap.dedent(code)
    return ns.run([sys.executable, "-c", program], timeout=60).stdout


def ip_json(ns: Netns, *argv: str) -> list[dict]:
    return json.loads(ns.sh("ip", "-j", "-d", *argv))


def test_a_bridge_is_created_marked_addressed_and_up_as_asked() -> None:
    with netns() as ns:
        in_ns(
            ns,
            """
            nl.link("add", ifname="vb0", kind="bridge", br_stp_state=1, br_forward_delay=300,
                    address="52:54:00:0a:0b:0c")
            index = nl.link_lookup(ifname="vb0")[0]
            nl.link("set", index=index, ifalias="virtfw network lab")
            nl.addr("add", index=index, address="192.168.150.1", prefixlen=24)
            nl.addr("add", index=index, address="fd00:150::1", prefixlen=64)
            nl.link("set", index=index, state="up")
            """,
        )
        (link,) = ip_json(ns, "link", "show", "vb0")
        assert link["linkinfo"]["info_kind"] == "bridge"
        assert link["linkinfo"]["info_data"]["stp_state"] == 1
        assert link["linkinfo"]["info_data"]["forward_delay"] == 300
        assert link["address"] == "52:54:00:0a:0b:0c"
        assert link["ifalias"] == "virtfw network lab"
        assert "UP" in link["flags"]
        (addresses,) = ip_json(ns, "address", "show", "vb0")
        found = {
            (a["local"], a["prefixlen"], a.get("broadcast")) for a in addresses["addr_info"] if a["scope"] == "global"
        }
        assert found == {("192.168.150.1", 24, "192.168.150.255"), ("fd00:150::1", 64, None)}


def test_what_it_reads_is_what_the_kernel_holds() -> None:
    with netns() as ns:
        ns.sh("ip", "link", "add", "vb1", "type", "bridge")
        ns.sh("ip", "link", "set", "vb1", "alias", "someone else's")
        ns.sh("ip", "address", "add", "10.9.8.7/16", "dev", "vb1")
        many = "".join(f"link add d{number} type bridge\n" for number in range(300))
        ns.run(["ip", "-batch", "-"], input=many)  # a dump longer than one datagram
        out = in_ns(
            ns,
            """
            index = nl.link_lookup(ifname="vb1")[0]
            link = nl.get_links(index)[0]
            print(link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND"),
                  link.get_attr("IFLA_IFALIAS"), link["flags"] & 1)
            print([(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in nl.get_addr(index=index)])
            print(len(nl.get_links()), nl.link_lookup(ifname="nothere"))
            print(index == int(open("/sys/class/net/vb1/ifindex").read()))
            """,
        )
        assert out.splitlines() == [
            "vb1 bridge someone else's 0",
            "[('10.9.8.7', 16)]",
            "302 []",
            "True",
        ]


def test_the_kernel_refusal_is_a_netlink_error_with_its_errno_and_words() -> None:
    with netns() as ns:
        out = in_ns(
            ns,
            """
            nl.link("add", ifname="vb2", kind="bridge", br_stp_state=0, br_forward_delay=0)
            index = nl.link_lookup(ifname="vb2")[0]
            nl.addr("add", index=index, address="10.1.1.1", prefixlen=24)
            for attempt in (
                lambda: nl.link("add", ifname="vb2", kind="bridge", br_stp_state=0, br_forward_delay=0),
                lambda: nl.addr("add", index=index, address="10.1.1.1", prefixlen=24),
                lambda: nl.link("del", index=99999),
                lambda: nl.addr("del", index=index, address="10.1.1.2", prefixlen=24),
            ):
                try:
                    attempt()
                    print("accepted")
                except NetlinkError as exc:
                    print(exc.code, bool(exc.args[-1]))
            nl.link("del", index=index)
            print(nl.link_lookup(ifname="vb2"))
            """,
        )
        assert out.splitlines() == ["17 True", "17 True", "19 True", "99 True", "[]"]
        assert ip_json(ns, "link", "show", "type", "bridge") == []
