"""The manual pages in man/: complete for the CLI and the XML formats, and clean roff.

- virtfw.1 documents every command of the click application, every option and
  argument of each, the global options, the environment variables and the exit
  statuses; a command it documents must exist.
- virtfw-nwfilter.5 has a subsection for every protocol element of
  virtfw.filter.schema.PROTOCOLS and names every attribute of each.
- Every page renders with man (and groff) in warnings mode without a warning.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest

import virtfw
from virtfw.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "man"
PAGES = ["virtfw.1", "virtfw-network.conf.5", "virtfw-network.5", "virtfw-nwfilter.5"]


# ---------------------------------------------------------------------------------
# reading roff source as text, good enough for "is it mentioned here"
# ---------------------------------------------------------------------------------

_ESCAPES = [
    (re.compile(r"\\f(?:\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\\((?:dq)"), '"'),
    (re.compile(r"\\\((?:aq)"), "'"),
    (re.compile(r"\\\((?:ti)"), "~"),
    (re.compile(r"\\\((?:bu|em|en|lq|rq|ha)"), " "),
    (re.compile(r"\\[-]"), "-"),
    (re.compile(r"\\[&%c|^]"), ""),
    (re.compile(r"\\e"), "\\\\"),
]


_ALTERNATING = {"BI", "BR", "IB", "IR", "RB", "RI"}  # arguments joined without spaces


def macro_arguments(rest: str) -> list[str]:
    """Split macro arguments as roff does: blanks separate, double quotes group."""
    return [quoted if quoted or bare == "" else bare
            for quoted, bare in re.findall(r'"((?:[^"]|"")*)"|(\S+)', rest)]  # fmt: skip


def plain(line: str) -> str:
    """One roff line without macro name, quotes and escapes."""
    if line.startswith((".", "'")):
        name, _, rest = line[1:].partition(" ")
        args = [arg.replace('""', '"') for arg in macro_arguments(rest)]
        line = ("" if name in _ALTERNATING else " ").join(args)
    for pattern, replacement in _ESCAPES:
        line = pattern.sub(replacement, line)
    return line


def lines_of(page: str) -> list[str]:
    """Source lines without comments."""
    text = (MAN / page).read_text()
    return [line for line in text.splitlines() if not line.startswith(('.\\"', "'\\\""))]


def sections(page: str) -> dict[str, list[str]]:
    """``.SH`` name -> its source lines (comments dropped)."""
    found: dict[str, list[str]] = {}
    current = None
    for line in lines_of(page):
        if line.startswith(".SH"):
            current = plain(line).strip()
            found[current] = []
        elif current is not None:
            found[current].append(line)
    return found


def text(lines: list[str]) -> str:
    return "\n".join(plain(line) for line in lines)


def mentions(haystack: str, word: str) -> bool:
    """``word`` as a whole token: not part of a longer option or name."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", haystack) is not None


def tagged_entries(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(tag text, body lines) of every ``.TP`` entry, nested ones included."""
    entries: list[tuple[str, list[str]]] = []
    index = 0
    while index < len(lines):
        if lines[index].startswith(".TP") and index + 1 < len(lines):
            entries.append((plain(lines[index + 1]).strip(), []))
            index += 2
            continue
        if entries:
            entries[-1][1].append(lines[index])
        index += 1
    return entries


def visible_commands() -> dict[str, click.Command]:
    return {name: cmd for name, cmd in cli.commands.items() if not cmd.hidden}


def command_entries() -> dict[str, str]:
    """Command name -> the text of its entry in virtfw.1's COMMANDS section: its tag
    and everything up to the next command's tag (its own options included)."""
    lines = sections("virtfw.1")["COMMANDS"]
    names = set(cli.commands)
    entries: dict[str, str] = {}
    current: str | None = None
    for tag, body in tagged_entries(lines):
        first = tag.split()[0] if tag.split() else ""
        if first in names or (
            re.fullmatch(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)+|[a-z]+", first) and not first.startswith("-")
        ):
            current = first
            entries[current] = tag + "\n"
        elif current is None:
            continue
        else:
            entries[current] += tag + "\n"
        entries[current] += text(body) + "\n"
    return entries


def option_strings(param: click.Parameter) -> list[str]:
    return [*param.opts, *param.secondary_opts]


# ---------------------------------------------------------------------------------
# virtfw.1 against the click application
# ---------------------------------------------------------------------------------


def test_pages_exist() -> None:
    for page in PAGES:
        assert (MAN / page).is_file(), f"man/{page} is missing"


def test_every_command_is_documented() -> None:
    entries = command_entries()
    missing = sorted(set(visible_commands()) - set(entries))
    assert not missing, f"man/virtfw.1 does not document: {', '.join(missing)}"


def test_no_documented_command_is_missing_from_the_cli() -> None:
    stale = sorted(set(command_entries()) - set(cli.commands))
    assert not stale, f"man/virtfw.1 documents commands the CLI does not have: {', '.join(stale)}"


@pytest.mark.parametrize("name", sorted(visible_commands()))
def test_every_option_and_argument_is_documented(name: str) -> None:
    entry = command_entries().get(name)
    if entry is None:
        pytest.fail(f"man/virtfw.1 does not document {name}")
    tag = entry.splitlines()[0]
    for param in cli.commands[name].params:
        if getattr(param, "hidden", False):
            continue
        if isinstance(param, click.Argument):
            metavar = param.human_readable_name
            assert mentions(tag, metavar.strip("[].")), (
                f"{name}: argument {metavar} is not in its synopsis line {tag!r}"
            )
            continue
        for opt in option_strings(param):
            assert mentions(entry, opt), f"man/virtfw.1: {name} does not document its option {opt}"


def test_global_options_are_documented() -> None:
    global_text = text(sections("virtfw.1")["GLOBAL OPTIONS"])
    ctx = click.Context(cli)
    help_option = cli.get_help_option(ctx)
    params = [p for p in cli.params if not getattr(p, "hidden", False)]
    for param in [*params, *([help_option] if help_option else [])]:
        for opt in option_strings(param):
            assert mentions(global_text, opt), f"man/virtfw.1 GLOBAL OPTIONS does not document {opt}"


def test_environment_is_documented() -> None:
    environment = text(sections("virtfw.1")["ENVIRONMENT"])
    names = {"EDITOR", "VISUAL"}
    for command in [cli, *cli.commands.values()]:
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if envvar:
                names.update([envvar] if isinstance(envvar, str) else envvar)
    for name in sorted(names):
        assert mentions(environment, name), f"man/virtfw.1 ENVIRONMENT does not document {name}"


def test_exit_statuses_are_documented() -> None:
    tags = {tag for tag, _ in tagged_entries(sections("virtfw.1")["EXIT STATUS"])}
    assert {"0", "1", "2", "3"} <= tags
    verify_entry = command_entries().get("verify", "")
    assert "3" in verify_entry, "verify's entry should say it exits with status 3"


def test_required_sections() -> None:
    wanted = {"NAME", "SYNOPSIS", "DESCRIPTION", "GLOBAL OPTIONS", "COMMANDS", "EXIT STATUS",
              "ENVIRONMENT", "FILES", "SHELL COMPLETION", "EXAMPLES", "SEE ALSO"}  # fmt: skip
    assert wanted <= set(sections("virtfw.1"))
    for page in PAGES[1:]:
        assert {"NAME", "DESCRIPTION", "SEE ALSO"} <= set(sections(page)), page


def test_completion_instructions() -> None:
    completion = text(sections("virtfw.1")["SHELL COMPLETION"])
    for shell in ("bash", "zsh", "fish"):
        assert f"_VIRTFW_COMPLETE={shell}_source virtfw" in completion


def test_pages_refer_to_each_other() -> None:
    see_also = text(sections("virtfw.1")["SEE ALSO"])
    for page in PAGES[1:]:
        name, section = page.rsplit(".", 1)
        assert f"{name}({section})" in see_also.replace(" ", ""), f"virtfw.1 SEE ALSO lacks {page}"
    for page in PAGES[1:]:
        assert "virtfw(1)" in text(sections(page)["SEE ALSO"]).replace(" ", ""), f"{page} SEE ALSO lacks virtfw(1)"


def test_title_lines() -> None:
    """.TH names the page and section, and the version is the package's."""
    for page in PAGES:
        name, section = page.rsplit(".", 1)
        th = next(line for line in lines_of(page) if line.startswith(".TH"))
        words = re.findall(r'"[^"]*"|\S+', th)
        assert plain(words[1]).upper() == name.upper(), th
        assert words[2] == section, th
        version = re.search(r"virtfw (\S+?)\"", th)
        if version:
            assert version.group(1) == virtfw.__version__, (
                f"{page}: .TH says {version.group(1)}, the package is {virtfw.__version__}"
            )


def test_sources_are_ascii() -> None:
    """Non-ASCII source needs preconv; spell characters with roff escapes instead."""
    for page in PAGES:
        data = (MAN / page).read_bytes()
        bad = [n for n, line in enumerate(data.splitlines(), 1) if any(b > 0x7E for b in line)]
        assert not bad, f"{page}: non-ASCII on lines {bad[:10]}"


# ---------------------------------------------------------------------------------
# the formats
# ---------------------------------------------------------------------------------


def test_nwfilter_protocol_elements() -> None:
    from virtfw.filter import schema

    lines = sections("virtfw-nwfilter.5")["PROTOCOL ELEMENTS"]
    headings = [plain(line) for line in lines if line.startswith(".SS")]
    body = text(lines)
    for protocol in schema.PROTOCOLS:
        assert any(f"<{protocol}>" in heading for heading in headings), (
            f"virtfw-nwfilter.5 has no PROTOCOL ELEMENTS subsection for <{protocol}>"
        )
        for attr in schema.attribute_order(protocol):
            assert mentions(body, attr), f"virtfw-nwfilter.5 does not document <{protocol}> attribute {attr}"


def test_every_page_set_mentions_every_protocol_element() -> None:
    from virtfw.filter import schema

    everything = "\n".join(text(lines_of(page)) for page in PAGES)
    missing = [p for p in schema.PROTOCOLS if f"<{p}>" not in everything]
    assert not missing, f"no page mentions {missing}"


def test_nwfilter_rules_chains_and_priorities() -> None:
    from virtfw.filter import schema, xml

    page = sections("virtfw-nwfilter.5")
    rules = text(page["RULES"])
    for word in (*xml.ACTIONS, *xml.DIRECTIONS, "statematch", str(xml.DEFAULT_RULE_PRIORITY)):
        assert mentions(rules, word), f"RULES does not mention {word}"
    chains = text(page["CHAINS AND PRIORITIES"])
    for kind in schema.CHAIN_TYPES:
        assert mentions(chains, kind), f"CHAINS AND PRIORITIES does not mention {kind}"
    for kind, priority in schema.DEFAULT_CHAIN_PRIORITY.items():
        assert re.search(rf"(?<![\w-]){kind}\s+{priority}(?!\d)", chains), (
            f"default priority of {kind} ({priority}) is not listed"
        )
    assert str(schema.MAX_CHAIN_LENGTH) in chains


def test_nwfilter_binding_and_variables() -> None:
    page = sections("virtfw-nwfilter.5")
    binding = text(page["THE FILTERBINDING ELEMENT"])
    for element in ("portdev", "mac", "filterref", "owner", "linkdev", "parameter"):
        assert f"<{element}" in binding, element
    variables = text(page["VARIABLES"])
    for form in ("$NAME", "$NAME[N]", "$NAME[@I]", "MAC", "IP"):
        assert form in variables, form


def test_network_format() -> None:
    from virtfw.net import model, xml

    page = text(lines_of("virtfw-network.5"))
    for mode in (*model.FORWARD_MODES, *xml.UNSUPPORTED_MODES):
        if mode != "none":
            assert mentions(page, mode), f"virtfw-network.5 does not mention forward mode {mode}"
    for element in xml.KEPT_ELEMENTS:
        if ":" in element:  # namespaced (dnsmasq:options): not read by the parser yet
            continue
        assert f"<{element}>" in page, f"virtfw-network.5 does not list kept element <{element}>"
    for element in (
        "name",
        "uuid",
        "forward",
        "nat",
        "bridge",
        "mac",
        "domain",
        "ip",
        "dhcp",
        "range",
        "host",
        "bootp",
        "tftp",
    ):
        assert f"<{element}" in page, f"virtfw-network.5 does not describe <{element}>"


def test_network_conf_format() -> None:
    from virtfw import config

    page = text(lines_of("virtfw-network.conf.5"))
    assert "firewall_backend" in page
    for backend in config.BACKENDS:
        assert f'"{backend}"' in page, backend
    assert "VIRTFW_BACKEND" in page and "--backend" in page


# ---------------------------------------------------------------------------------
# rendering without warnings
# ---------------------------------------------------------------------------------

RENDER_ENV = {"LC_ALL": "C.UTF-8", "MANROFFSEQ": "", "MANWIDTH": "80"}


def _renderers() -> list[str]:
    found = [tool for tool in ("man", "groff") if shutil.which(tool)]
    if not found:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("neither man nor groff is installed: install man-db and groff-base")
        pytest.skip("neither man nor groff is installed (apt-get install man-db groff-base)")
    return found


def _render(tool: str, page: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **RENDER_ENV}
    if tool == "man":
        argv = ["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", str(page)]
    else:
        argv = ["groff", "-man", "-ww", "-z", "-Tutf8", str(page)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("page", PAGES)
def test_renders_without_warnings(page: str) -> None:
    for tool in _renderers():
        result = _render(tool, MAN / page)
        assert result.returncode == 0, f"{tool} failed on {page}: {result.stderr}"
        assert not result.stderr.strip(), f"{tool} warns on {page}:\n{result.stderr}"
        if tool == "man":
            assert "virtfw" in result.stdout


def test_rendered_width() -> None:
    """At 80 columns nothing sticks out (long unbreakable words, wide examples)."""
    if not shutil.which("man"):
        pytest.skip("man is not installed")
    for page in PAGES:
        result = _render("man", MAN / page)
        rendered = re.sub(r".\x08", "", result.stdout)  # overstrike bold/underline
        rendered = re.sub(r"\x1b\[[0-9;]*m", "", rendered)  # or SGR
        long = [line for line in rendered.splitlines() if len(line) > 80]
        assert not long, f"{page}: lines wider than 80 columns: {long[:3]}"
