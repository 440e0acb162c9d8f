"""The meaning of a port's nft filter chains, so two spellings of one filter compare equal.

One documented comparison, used by the nftables conformance test against libvirt's
``*-linux.nftables.args``. A port's rules are reduced to, per table kind (``ethernet``,
``inet``) and direction (``in`` to the guest, ``out`` from it), the list of entries in
evaluation order, each entry

* a rule: the set of its match terms (a rule's matches are a conjunction, so their order
  does not matter) and its verdict, or
* a jump: its match terms and the entries of the sub-chain it enters.

What is normalized away, because it does not change which packets get which verdict:

* chain names (libvirt ``n-vnet0-SUB-out``, virtfw ``n-vnet0-out-SUB``), tables, hook
  priorities and the verdict-map dispatch (not compared at all);
* a jump to a sub-chain that holds one rule ``[M] V`` where M is empty or the jump's own
  match is written as ``JUMPMATCH V`` (virtfw's one-chain-less form);
* rules whose verdict is ``continue`` (they change nothing; virtfw writes none);
* a value compared under a mask is taken with the bits outside the mask cleared (libvirt
  writes the unmasked MAC, ``& ff:ff:ff:ff:ff:80 == aa:bb:cc:dd:ee:ff``, which as written
  could never match; ebtables' ``-d MAC/MASK`` and virtfw mask it);
* spellings: numbers in any base; ``ether type ip|ip6|arp`` and their numbers;
  ``ip protocol``/``ip6 nexthdr``/``meta l4proto`` and protocol names or numbers;
  ``th|tcp|udp|sctp sport|dport``; ``/32`` and ``/128``; ``a-a`` ranges; a MAC masked
  with all ones; ``arp ptype ip``; comments; the four per-byte lookups of a gratuitous-ARP
  test in ``@same-ip-set`` (one term per byte mask).

Everything else is compared as written: addresses, ports, ``!=``, ``ct direction``,
``ct state`` sets, ``ct count``, verdicts and the order of entries.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass

ETHERTYPE_NAMES = {"ip": 0x0800, "ip6": 0x86DD, "arp": 0x0806, "vlan": 0x8100, "8021q": 0x8100}
L4_NAMES = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "esp": 50, "ah": 51, "icmpv6": 58, "ipv6-icmp": 58,
            "sctp": 132, "udplite": 136}  # fmt: skip
VERDICTS = ("accept", "drop", "return", "continue", "reject")

# Multi-word selectors, longest first; the canonical name of each.
SELECTORS: dict[tuple[str, ...], str] = {
    ("arp", "saddr", "ip"): "arp saddr ip", ("arp", "daddr", "ip"): "arp daddr ip",
    ("arp", "saddr", "ether"): "arp saddr ether", ("arp", "daddr", "ether"): "arp daddr ether",
    ("ct", "count", "over"): "ct count over",
    ("ether", "type"): "ether type", ("ether", "saddr"): "ether saddr", ("ether", "daddr"): "ether daddr",
    ("meta", "l4proto"): "l4proto", ("ip", "protocol"): "l4proto", ("ip6", "nexthdr"): "l4proto",
    ("ip", "saddr"): "ip saddr", ("ip", "daddr"): "ip daddr", ("ip", "dscp"): "dscp", ("ip6", "dscp"): "dscp",
    ("ip6", "saddr"): "ip6 saddr", ("ip6", "daddr"): "ip6 daddr",
    ("tcp", "flags"): "tcp flags", ("tcp", "option"): "tcp option",
    ("icmp", "type"): "icmp type", ("icmp", "code"): "icmp code",
    ("icmpv6", "type"): "icmpv6 type", ("icmpv6", "code"): "icmpv6 code",
    ("vlan", "id"): "vlan id", ("vlan", "type"): "vlan type",
    ("arp", "htype"): "arp htype", ("arp", "ptype"): "arp ptype", ("arp", "operation"): "arp operation",
    ("ct", "direction"): "ct direction", ("ct", "state"): "ct state", ("same-ip",): "same-ip",
}  # fmt: skip
for _l4 in ("tcp", "udp", "sctp", "udplite", "th"):
    SELECTORS[(_l4, "sport")] = "sport"
    SELECTORS[(_l4, "dport")] = "dport"


@dataclass(frozen=True)
class Rule:
    terms: frozenset[tuple[str, str, str]]  # (selector, op, value)
    verdict: str

    def __str__(self) -> str:
        return " ".join(sorted(" ".join(t) for t in self.terms)) + f" -> {self.verdict}"


@dataclass(frozen=True)
class Jump:
    terms: frozenset[tuple[str, str, str]]
    body: tuple[Rule | Jump, ...]

    def __str__(self) -> str:
        inner = "; ".join(str(entry) for entry in self.body)
        return " ".join(sorted(" ".join(t) for t in self.terms)) + f" -> [{inner}]"


Entry = Rule | Jump


def _number(text: str) -> str:
    try:
        return str(int(text, 0))
    except ValueError:
        return text


def _value(selector: str, text: str) -> str:
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if selector == "ether type" or selector == "vlan type" or selector == "arp ptype":
        return str(ETHERTYPE_NAMES.get(text, None) or int(text, 0))
    if selector == "l4proto":
        return str(L4_NAMES.get(text, None) or int(text, 0))
    if re.fullmatch(r"[0-9a-fA-F]{1,2}(:[0-9a-fA-F]{1,2}){5}", text):
        return ":".join(f"{int(part, 16):02x}" for part in text.split(":"))
    if "-" in text and not text.startswith("-"):
        low, _, high = text.partition("-")
        low, high = _number(low), _number(high)
        return low if low == high else f"{low}-{high}"
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=False)
            if network.prefixlen == network.max_prefixlen:
                return str(network.network_address)
            return f"{ipaddress.ip_address(text.split('/')[0])}/{network.prefixlen}"
        except ValueError:
            return text
    if selector == "tcp flags":
        return text.replace(" ", "")
    return _number(text)


TCP_FLAGS = ("fin", "syn", "rst", "psh", "ack", "urg")


def _flag_set(words: list[str]) -> str:
    names = set(re.split(r"[\s,|(){}]+", " ".join(words).lower())) - {""}
    if names & {"*", "all"} or set(TCP_FLAGS) <= names:
        return "all"
    names -= {"0", "0x0", "none"}
    return ",".join(sorted(names)) or "none"


def _tcp_flags_term(words: list[str], i: int) -> tuple[tuple[str, str, str], int]:
    """``tcp flags & MASK ==|!= FLAGS`` in either project's spelling, as (mask/flags)."""
    assert words[i] == "&", words
    i += 1
    mask: list[str] = []
    while words[i] not in ("==", "!="):
        mask.append(words[i])
        i += 1
    op = words[i]
    i += 1
    flags = [words[i]]
    i += 1
    while i + 1 < len(words) and words[i] == "|":
        flags.append(words[i + 1])
        i += 2
    return ("tcp flags", op, f"{_flag_set(mask)}/{_flag_set(flags)}"), i


def _masked(value: str, mask: str) -> str:
    """A value compared under a mask, with the bits outside the mask cleared."""
    if ":" in value and ":" in mask:
        return ":".join(
            f"{int(v, 16) & int(m, 16):02x}" for v, m in zip(value.split(":"), mask.split(":"), strict=True)
        )
    try:
        return str(int(value) & int(mask))
    except ValueError:
        return value


def _tokens(text: str) -> list[str]:
    """shlex words, with braces kept together ('{ a, b }' is one word)."""
    words = shlex.split(text)
    out: list[str] = []
    depth = 0
    for word in words:
        if depth:
            out[-1] += " " + word
        else:
            out.append(word)
        depth += word.count("{") - word.count("}")
    return out


_LOOKUP = re.compile(r"arp saddr ip & (\S+) \. arp daddr ip & (\S+) (?:== )?(!= )?@same-ip-set")


def parse_rule(text: str) -> tuple[frozenset[tuple[str, str, str]], str]:
    """(match terms, verdict) of one rule's text; the verdict may be ``jump CHAIN``."""
    # libvirt's gratuitous-ARP test, one byte pair per set lookup: one term per byte mask
    text = _LOOKUP.sub(lambda m: f"same-ip {'!=' if m.group(3) else '=='} {m.group(1)}", text)
    words = _tokens(text)
    if "comment" in words:
        words = words[: words.index("comment")]
    terms: set[tuple[str, str, str]] = set()
    verdict = "continue"
    i = 0
    while i < len(words):
        word = words[i]
        if word in VERDICTS:
            verdict = word
            i += 1
            continue
        if word in ("jump", "goto"):
            verdict = f"jump {words[i + 1]}"
            i += 2
            continue
        if word == "counter":
            i += 1
            continue
        selector = None
        for key, name in sorted(SELECTORS.items(), key=lambda item: -len(item[0])):
            if tuple(words[i : i + len(key)]) == key:
                selector, i = name, i + len(key)
                break
        if selector is None and word.startswith("@"):
            selector, i = word, i + 1
        if selector is None:
            raise ValueError(f"cannot read {word!r} in {text!r}")
        if selector == "tcp flags":
            term, i = _tcp_flags_term(words, i)
            terms.add(term)
            continue
        mask = ""
        if words[i] == "&":
            mask, i = words[i + 1], i + 2
        op = "=="
        if words[i] in ("==", "!=", "!"):
            op, i = ("!=" if words[i] in ("!=", "!") else "=="), i + 1
        value = words[i]
        i += 1
        if selector == "tcp option" and i < len(words) and words[i] in ("exists", "missing"):
            op = "==" if words[i] == "exists" else "!="
            i += 1
        value = _value(selector, value)
        if mask:
            mask_value = _value(selector, mask)
            if mask_value in ("ff:ff:ff:ff:ff:ff", str(2**48 - 1), str(2**32 - 1)):
                mask = ""
            else:
                value = f"{_masked(value, mask_value)}&{mask_value}"
        terms.add((selector, op, value))
    return frozenset(terms), verdict


def chain_key(name: str, port: str) -> tuple[str, str | None]:
    """(direction, sub-chain or None) of a port chain, in either project's naming."""
    rest = name.removeprefix(f"n-{port}-")
    if rest in ("in", "out"):
        return rest, None
    if rest.startswith(("in-", "out-")):  # virtfw: n-PORT-DIR-SUB
        direction, _, sub = rest.partition("-")
        return direction, sub
    sub, _, direction = rest.rpartition("-")  # libvirt: n-PORT-SUB-DIR
    return direction, sub


def meaning(chains: dict[tuple[str, str], list[str]], port: str) -> dict[tuple[str, str], tuple[Entry, ...]]:
    """{(table kind, direction): entries} from {(table, chain): [rule texts]}."""
    bodies: dict[tuple[str, str, str | None], list[str]] = {}
    for (table, chain), rules in chains.items():
        kind = "ethernet" if table.endswith("ethernet") else "inet"
        direction, sub = chain_key(chain, port)
        bodies[(kind, direction, sub)] = rules
    subs_by_name = {chain: chain_key(chain, port) for (_, chain) in chains}

    def entries(kind: str, direction: str, sub: str | None) -> tuple[Entry, ...]:
        out: list[Entry] = []
        for text in bodies.get((kind, direction, sub), []):
            terms, verdict = parse_rule(text)
            if verdict.startswith("jump "):
                target = subs_by_name.get(verdict[5:], chain_key(verdict[5:], port))
                body = entries(kind, *target)
                only = body[0] if len(body) == 1 else None
                if isinstance(only, Rule) and only.terms <= terms and only.verdict in ("accept", "drop"):
                    out.append(Rule(terms, only.verdict))  # virtfw's form: the jump carries the verdict
                    continue
                out.append(Jump(terms, body))
            elif verdict != "continue":  # a rule whose verdict is 'continue' does nothing
                out.append(Rule(terms, verdict))
        return tuple(out)

    return {
        (kind, direction): entries(kind, direction, None)
        for kind in ("ethernet", "inet")
        for direction in ("in", "out")
        if (kind, direction, None) in bodies
    }


def libvirt_chains(commands: list[list[str]], port: str) -> dict[tuple[str, str], list[str]]:
    """The per-port chains of libvirt's ``nft add rule bridge TABLE CHAIN ...`` commands."""
    chains: dict[tuple[str, str], list[str]] = {}
    for argv in commands:
        if argv[:4] != ["nft", "add", "rule", "bridge"]:
            continue
        table, chain = argv[4], argv[5]
        if not chain.startswith(f"n-{port}-"):
            continue  # the dispatch from the hook chains
        # one argument may hold several words ('& ff:ff:ff:ff:ff:ff == 01:02:03:04:05:06')
        chains.setdefault((table, chain), []).append(" ".join(argv[6:]))
    return chains


#: Where libvirt's expected nftables output departs from the meaning its documentation and
#: its released (iptables) driver give a rule, the one correction made to the oracle
#: before comparing, and why.
ORACLE_CORRECTIONS = {
    "reply rules match no source MAC": (
        "libvirt's reply rule (ct direction reply) keeps `ether saddr` = the rule's srcmacaddr, "
        "the sender of the original direction; a reply never comes from that address (it is "
        "the guest's own MAC on replies from the guest's peers, and vice versa), so the reply "
        "rule could never match and replies would be dropped. libvirt's released driver "
        "matches no MAC on the reverse rule; neither does virtfw."
    ),
}


def corrected(found: dict[tuple[str, str], tuple[Entry, ...]]) -> dict[tuple[str, str], tuple[Entry, ...]]:
    """libvirt's chains with ORACLE_CORRECTIONS applied."""

    def fix(entry: Entry) -> Entry:
        if isinstance(entry, Jump):
            return Jump(entry.terms, tuple(fix(e) for e in entry.body))
        if ("ct direction", "==", "reply") in entry.terms:
            return Rule(frozenset(t for t in entry.terms if t[0] != "ether saddr"), entry.verdict)
        return entry

    return {key: tuple(fix(e) for e in entries) for key, entries in found.items()}


def drop_empty(found: dict[tuple[str, str], tuple[Entry, ...]]) -> dict[tuple[str, str], tuple[Entry, ...]]:
    return {key: value for key, value in found.items() if value}
