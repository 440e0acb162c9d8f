"""Bounded work (issue 11): what a binding, a filter definition or an XML document may make.

Three lists of 200 values under three iterators once expanded to 8 million rules (90 s,
2 GB) before anything was refused. The size is now counted from list lengths first, so
the refusal is one ``error:`` line naming the binding, the figure, the bound and the way
out, with no rule built; a case just under each bound still passes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from virtfw import xmlsafe
from virtfw.errors import VirtfwError
from virtfw.filter import instantiate as inst
from virtfw.filter import schema
from virtfw.filter.instantiate import (
    MAX_RULES_PER_BINDING,
    MAX_RULES_PER_DEFINE,
    check_acyclic,
    check_total,
    instantiate,
    rule_count,
)
from virtfw.filter.model import Binding, Filter
from virtfw.filter.xml import parse_binding, parse_filter

MAC = "52:54:00:00:00:01"
CROSS = parse_filter(
    "<filter name='cross' chain='ipv4'><rule action='accept' direction='in'>"
    "<tcp srcipaddr='$A' srcportstart='$B[@1]' dstportstart='$C[@2]'/></rule></filter>"
)


def _cross_binding(a: int, b: int, c: int, port: str = "vnet0") -> Binding:
    params = {
        "A": [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(a)],
        "B": [str(1000 + i) for i in range(b)],
        "C": [str(30000 + i) for i in range(c)],
    }
    return Binding(port, MAC, "cross", params)


def _lookup(*filters: Filter):
    known = {f.name: f for f in filters}

    def lookup(name: str) -> Filter:
        try:
            return known[name]
        except KeyError:
            raise VirtfwError(f"no filter {name}") from None

    return lookup


@pytest.fixture
def no_rule_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building any rule instance fails the test: a refusal must come from counting."""

    def refuse(*args: object) -> None:
        raise AssertionError("a rule was instantiated before the size was refused")

    monkeypatch.setattr(inst, "_rule_instances", refuse)


def test_cross_product_of_three_200_value_lists_is_refused_without_building_a_rule(no_rule_built: None) -> None:
    binding = _cross_binding(200, 200, 200)
    start = time.perf_counter()
    with pytest.raises(VirtfwError) as caught:
        instantiate(binding, _lookup(CROSS))
    elapsed = time.perf_counter() - start
    message = str(caught.value)
    assert "binding vnet0" in message and "filter 'cross'" in message
    assert "8,000,000 rules" in message and f"{MAX_RULES_PER_BINDING:,}" in message
    assert "200 ($A) x 200 ($B) x 200 ($C)" in message  # where the product comes from
    assert "fewer values" in message and "[@N]" in message  # the way out
    assert "\n" not in message
    assert elapsed < 2.0  # generous: it takes well under a millisecond


def test_just_under_the_bound_is_accepted() -> None:
    a, b, c = 20, 20, MAX_RULES_PER_BINDING // 400
    assert a * b * c <= MAX_RULES_PER_BINDING
    assert rule_count(_cross_binding(a, b, c), _lookup(CROSS)).total == a * b * c
    rules = instantiate(_cross_binding(a, b, c), _lookup(CROSS)).rules
    assert len(rules) == a * b * c


def test_one_rule_over_the_bound_is_refused(no_rule_built: None) -> None:
    a, b = 20, 20
    c = MAX_RULES_PER_BINDING // (a * b) + 1
    with pytest.raises(VirtfwError, match=f"{a * b * c:,} rules"):
        instantiate(_cross_binding(a, b, c), _lookup(CROSS))


def test_lists_stepping_together_do_not_multiply() -> None:
    """The way out the message gives: one iterator for lists that belong together."""
    together = parse_filter(
        "<filter name='cross' chain='ipv4'><rule action='accept' direction='in'>"
        "<tcp srcipaddr='$A[@1]' srcportstart='$B[@1]' dstportstart='$C[@1]'/></rule></filter>"
    )
    assert rule_count(_cross_binding(200, 200, 200), _lookup(together)).total == 200


def test_filterrefs_fanning_out_are_counted_without_walking_every_path(no_rule_built: None) -> None:
    """A refers to B 300 times, B to C 300 times: 90,000 rules, found by counting each filter once."""
    c = parse_filter("<filter name='c'><rule action='accept' direction='in'><all/></rule></filter>")
    b = parse_filter("<filter name='b'>" + "<filterref filter='c'/>" * 300 + "</filter>")
    a = parse_filter("<filter name='a'>" + "<filterref filter='b'/>" * 300 + "</filter>")
    lookup = _lookup(a, b, c)
    start = time.perf_counter()
    check_acyclic(a, lookup)
    with pytest.raises(VirtfwError, match="90,000 rules"):
        instantiate(Binding("vnet0", MAC, "a", {}), lookup)
    assert time.perf_counter() - start < 2.0


def test_counting_finds_what_instantiation_would_refuse(no_rule_built: None) -> None:
    with pytest.raises(VirtfwError, match=r"uses variable \$C"):
        instantiate(Binding("vnet0", MAC, "cross", {"A": ["10.0.0.1"], "B": ["1"]}), _lookup(CROSS))


def test_a_definition_reaching_too_many_rules_over_its_bindings_is_refused() -> None:
    per_binding = MAX_RULES_PER_BINDING
    count = MAX_RULES_PER_DEFINE // per_binding
    bindings = [_cross_binding(20, 20, per_binding // 400, f"vnet{k}") for k in range(count)]
    assert check_total("cross", bindings, _lookup(CROSS)) == count * per_binding  # at the bound: accepted
    with pytest.raises(VirtfwError) as caught:
        check_total("cross", [*bindings, _cross_binding(1, 1, 1, "vnetx")], _lookup(CROSS))
    message = str(caught.value)
    assert "filter 'cross'" in message and f"{count + 1} binding(s)" in message
    assert f"{count * per_binding + 1:,} rules" in message and f"{MAX_RULES_PER_DEFINE:,}" in message


def _binding_xml(values: int) -> str:
    params = "".join(f"<parameter name='P' value='{k}'/>" for k in range(values))
    return (
        f"<filterbinding><portdev name='vnet0'/><mac address='{MAC}'/>"
        f"<filterref filter='cross'>{params}</filterref></filterbinding>"
    )


def test_values_per_variable_are_bounded() -> None:
    assert len(parse_binding(_binding_xml(schema.MAX_VALUES)).params["P"]) == schema.MAX_VALUES
    with pytest.raises(VirtfwError, match=f"more than {schema.MAX_VALUES} values"):
        parse_binding(_binding_xml(schema.MAX_VALUES + 1))


def test_documents_are_bounded() -> None:
    padding = " " * (xmlsafe.MAX_DOCUMENT_BYTES - len("<filter name='x'></filter>"))
    assert parse_filter(f"<filter name='x'>{padding}</filter>").name == "x"
    with pytest.raises(VirtfwError, match="larger .* than the 4 MiB"):
        parse_filter(f"<filter name='x'>{padding} </filter>")


def test_a_huge_input_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    huge = tmp_path / "huge.xml"
    with open(huge, "wb") as handle:
        handle.truncate(8 * 1024**3)  # sparse: 8 GiB that a whole read would try to allocate
    with pytest.raises(VirtfwError, match=f"{huge}: the document is larger than the 4 MiB"):
        xmlsafe.read_document(huge)
    with pytest.raises(VirtfwError, match="cannot read"):
        xmlsafe.read_document(tmp_path / "missing.xml")
