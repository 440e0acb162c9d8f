"""Instantiating a filter tree on a port: filterrefs, variables and iterations.

The result is a flat list of ``PortRule``s in definition order (filterrefs expanded
depth-first where they appear), each with typed values; laying them out by priority
and protocol chain is the backend's business.

Variable semantics follow libvirt:

- a filterref's ``<parameter>``s add to the variables of the referencing filter, and
  the referencing side wins where both define a name;
- ``$NAME`` is ``$NAME[@0]``; variables sharing an iterator id are walked in lockstep
  (their lists must be equally long), different ids give the cross product, with
  iterator 0 varying fastest, then the others in order of first use;
- within one iterator a position whose values repeat an earlier position is skipped,
  so a list holding a value twice does not produce the same rule twice;
- ``$NAME[2]`` picks one element and does not iterate.

Bounds. Different iterators multiply: three lists of 200 values under three iterators
give 8 million instances of one rule, which took minutes and gigabytes before a single
rule reached the kernel. So the size of an instantiation is counted first, from list
lengths alone (``rule_count``: arithmetic on lengths, no rule is built), and refused
with one line when it passes a bound an admin does not meet in real use:

- ``MAX_RULES_PER_BINDING`` rules from one binding's filter tree (clean-traffic gives
  17 with one address; even 16 addresses times 64 ports in one rule stays far below);
- ``MAX_RULES_PER_DEFINE`` rules over every binding one filter definition
  re-instantiates (``check_total``): a thousand bindings of a 1,000-rule tree pass;
- a variable holds at most ``schema.MAX_VALUES`` values (checked when XML is parsed).

The count is an upper bound: positions repeating earlier values are not subtracted,
so the refusal never needs the values themselves. A filter referenced many times is
counted once per distinct set of list lengths (memoized), so a tree whose filterrefs
fan out cannot make the count itself slow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from virtfw.errors import VirtfwError
from virtfw.filter.model import Binding, Entry, Filter, FilterRef, FilterRule, VarRef
from virtfw.rules.portrules import Match, PortRule, PortRules

Variables = dict[str, list[str]]
Lookup = Callable[[str], Filter]


def binding_owner(portdev: str) -> str:
    return f"binding:{portdev}"


def binding_variables(binding: Binding) -> Variables:
    """The variables a binding starts with: its parameters, and $MAC from its <mac>."""
    variables = {name: list(values) for name, values in binding.params.items()}
    variables.setdefault("MAC", [binding.mac])
    return variables


MAX_RULES_PER_BINDING = 20_000
MAX_RULES_PER_DEFINE = 1_000_000
WAY_OUT = (
    "give the variables fewer values, or step lists that belong together with one "
    "iterator ([@N]) instead of combining separate ones"
)


def instantiate(binding: Binding, lookup: Lookup, *, counted: bool = False) -> PortRules:
    """The binding's rules; refused before any is built if there would be too many
    (``counted``: the caller has checked that already, with ``check_total``)."""
    if not counted:
        check_size(binding, lookup)
    rules: list[PortRule] = []
    _walk(lookup(binding.filter), binding_variables(binding), lookup, [binding.filter], rules)
    return PortRules(binding.portdev, binding_owner(binding.portdev), tuple(rules))


@dataclass(frozen=True)
class _Size:
    """The (upper bound on the) rules of a subtree, and its biggest single rule, which
    the refusal names since that is usually where the cross product is. The rule is
    described only when a refusal needs it (numbering rules costs a scan of the filter)."""

    total: int
    biggest: int = 0
    filt: Filter | None = None
    rule: FilterRule | None = None
    iterators: tuple[tuple[int, tuple[str, ...]], ...] = ()  # (length, names) of each

    def where(self) -> str:
        if self.filt is None or self.rule is None:
            return "no rule"
        text = _rule_origin(self.filt, self.rule)
        if len(self.iterators) > 1:
            text += ", iterating " + " x ".join(f"{n} (${', $'.join(names)})" for n, names in self.iterators)
        return text


def rule_count(binding: Binding, lookup: Lookup) -> _Size:
    """How many rules ``instantiate`` would make at most, from list lengths alone.

    Raises what instantiation would for an undefined variable, a bad index, unequal
    lists under one iterator, a missing filter or a cycle, only sooner.
    """
    memo: dict[tuple, _Size] = {}
    return _count(lookup(binding.filter), binding_variables(binding), lookup, [binding.filter], memo)


def check_size(binding: Binding, lookup: Lookup) -> int:
    """Refuse a binding whose tree expands to more than ``MAX_RULES_PER_BINDING`` rules."""
    size = rule_count(binding, lookup)
    if size.total > MAX_RULES_PER_BINDING:
        raise VirtfwError(
            f"binding {binding.portdev}: filter '{binding.filter}' would expand to {size.total:,} rules, "
            f"more than the {MAX_RULES_PER_BINDING:,} one binding may have "
            f"(the most from {size.where()}: {size.biggest:,}); {WAY_OUT}"
        )
    return size.total


def check_total(filter_name: str, bindings: list[Binding], lookup: Lookup) -> int:
    """Refuse re-instantiating ``bindings`` (the users of ``filter_name``) when together
    they would make more than ``MAX_RULES_PER_DEFINE`` rules; each one is also checked
    against the per-binding bound. Counting only: nothing is built."""
    total = 0
    for binding in bindings:
        total += check_size(binding, lookup)
    if total > MAX_RULES_PER_DEFINE:
        raise VirtfwError(
            f"filter '{filter_name}': its {len(bindings)} binding(s) would expand to {total:,} rules together, "
            f"more than the {MAX_RULES_PER_DEFINE:,} one definition may re-instantiate; "
            "nothing changed: delete some of these bindings first, or give the filter fewer rules"
        )
    return total


def _count(filt: Filter, variables: Variables, lookup: Lookup, path: list[str], memo: dict[tuple, _Size]) -> _Size:
    """``_walk``'s twin that adds up sizes instead of building rules (plain ints in the
    loop: this runs for every binding a reload or a definition instantiates)."""
    key = (id(filt), tuple(sorted((name, len(values)) for name, values in variables.items())))
    found = memo.get(key)
    if found is not None:
        return found
    total, best = 0, _Size(0)
    for entry in filt.entries:
        if isinstance(entry, FilterRule):
            refs = _refs(entry)
            if not refs:
                total += 1
                if not best.biggest:
                    best = _Size(1, 1, filt, entry)
                continue
            iterators, _ = _iterators(filt.name, refs, variables)
            count = 1
            for it in iterators:
                count *= it.length
            total += count
            if count > best.biggest:
                best = _Size(count, count, filt, entry, tuple((it.length, tuple(it.names)) for it in iterators))
            continue
        child, merged = _descend(filt, entry, variables, lookup, path)
        sub = _count(child, merged, lookup, path + [entry.filter], memo)
        total += sub.total
        if sub.biggest > best.biggest:
            best = sub
    size = memo[key] = dataclasses.replace(best, total=total)
    return size


def reachable(name: str, lookup: Lookup) -> set[str]:
    """Every filter name the tree rooted at ``name`` uses, itself included."""
    seen: set[str] = set()
    stack = [name]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        stack.extend(lookup(current).references())
    return seen


def tree_digest(name: str, lookup: Lookup) -> str:
    """A fingerprint of every definition in the tree rooted at ``name``: equal digests,
    equal instantiations (for the same binding)."""
    import hashlib

    digest = hashlib.sha256()
    for each in sorted(reachable(name, lookup)):
        filt = lookup(each)  # all but the uuid, which a file without one gets anew each time
        digest.update(repr((filt.name, filt.chain, filt.priority, filt.entries)).encode())
    return digest.hexdigest()


def check_acyclic(root: Filter, lookup: Lookup) -> None:
    """Refuse a definition that would make the filterref graph cyclic, naming the cycle.

    ``lookup`` must already see ``root`` as the new definition; references to
    filters not defined yet are fine here (they fail at instantiation).
    """

    done: set[str] = set()  # explored without a cycle: a tree referencing one filter 1,000 times visits it once

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name) :] + [name]
            raise VirtfwError(f"filter '{root.name}': filterref cycle {' -> '.join(cycle)}")
        if name in done:
            return
        try:
            current = root if name == root.name else lookup(name)
        except VirtfwError:
            return
        for ref in current.references():
            visit(ref, path + [name])
        done.add(name)

    visit(root.name, [])


def _walk(filt: Filter, variables: Variables, lookup: Lookup, path: list[str], out: list[PortRule]) -> None:
    for entry in filt.entries:
        if isinstance(entry, FilterRule):
            out.extend(_cached_instances(filt, entry, variables))
            continue
        child, merged = _descend(filt, entry, variables, lookup, path)
        _walk(child, merged, lookup, path + [entry.filter], out)


def _descend(
    filt: Filter, entry: Entry, variables: Variables, lookup: Lookup, path: list[str]
) -> tuple[Filter, Variables]:
    """The filter a filterref names, with the variables it sees (ours win)."""
    assert isinstance(entry, FilterRef)
    if entry.filter in path:
        cycle = path[path.index(entry.filter) :] + [entry.filter]
        raise VirtfwError(f"filterref cycle {' -> '.join(cycle)}")
    try:
        child = lookup(entry.filter)
    except VirtfwError:
        raise VirtfwError(f"filter '{filt.name}' references filter '{entry.filter}', which is not defined") from None
    merged = {name: list(values) for name, values in entry.params.items()}
    merged.update(variables)
    return child, merged


def _refs(rule: FilterRule) -> list[VarRef]:
    return [value for value in rule.match.attrs.values() if isinstance(value, VarRef)] if rule.match else []


def _rule_origin(filt: Filter, rule: FilterRule) -> str:
    """``filter 'NAME', rule N (accept in tcp, priority 500)``: how messages name a rule."""
    match = rule.match
    number = 1 + sum(1 for entry in filt.entries[: _position(filt, rule)] if isinstance(entry, FilterRule))
    origin = f"filter '{filt.name}', rule {number} ({rule.action} {rule.direction}"
    return origin + (f" {match.protocol}, priority {rule.priority})" if match else f", priority {rule.priority})")


# key -> (filter, rule, instances); holding the filter and rule keeps their ids unique
_INSTANCES: dict[tuple, tuple[Filter, FilterRule, tuple[PortRule, ...]]] = {}


def _cached_instances(filt: Filter, rule: FilterRule, variables: Variables) -> tuple[PortRule, ...]:
    """A rule's instances depend only on the values of the variables it uses: bindings
    that agree on those share the very same PortRule objects (and their renderings)."""
    names = sorted({v.name for v in rule.match.attrs.values() if isinstance(v, VarRef)}) if rule.match else []
    key = (id(filt), id(rule), tuple((n, tuple(variables.get(n, ()))) for n in names))
    found = _INSTANCES.get(key)
    if found is None:
        found = _INSTANCES[key] = (filt, rule, tuple(_rule_instances(filt, rule, variables)))
    return found[2]


def _rule_instances(filt: Filter, rule: FilterRule, variables: Variables) -> Iterator[PortRule]:
    match = rule.match
    refs = _refs(rule)
    origin = _rule_origin(filt, rule)
    for binding in _combinations(filt.name, refs, variables):
        matches = []
        if match:
            for attr, value in match.attrs.items():
                text = binding[value] if isinstance(value, VarRef) else value
                matches.append(Match(attr, _typed(filt.name, match.protocol, attr, text)))
        yield PortRule(
            chain=filt.chain,
            chain_priority=filt.priority,
            priority=rule.priority,
            action=rule.action,
            direction=rule.direction,
            statematch=rule.statematch,
            protocol=match.protocol if match else None,
            negate=match.negate if match else False,
            matches=tuple(matches),
            negated=frozenset(match.negated_attrs) if match and match.negated_attrs else None,
            origin=origin,
        )


def _position(filt: Filter, rule: FilterRule) -> int:
    return next(index for index, entry in enumerate(filt.entries) if entry is rule)


@lru_cache(maxsize=65536)
def _typed_cached(protocol: str, attr: str, text: str):
    from virtfw.filter import schema

    return schema.typed_value(protocol, attr, text)


def _typed(filter_name: str, protocol: str, attr: str, text: str):
    try:
        return _typed_cached(protocol, attr, text)
    except VirtfwError as exc:
        raise VirtfwError(f"filter '{filter_name}': {exc}") from None


@dataclass
class _Iterator:
    id: int
    names: list[str]
    length: int


def _values(filter_name: str, variables: Variables, name: str) -> list[str]:
    values = variables.get(name)
    if not values:
        if name == "IP":
            raise VirtfwError(
                f"filter '{filter_name}' needs $IP, and the binding has no IP parameter "
                "(address learning is not supported yet: pass <parameter name='IP' value='...'/>)"
            )
        raise VirtfwError(f"filter '{filter_name}' uses variable ${name}, which the binding does not define")
    return values


def _combinations(filter_name: str, refs: list[VarRef], variables: Variables) -> Iterator[dict[VarRef, str]]:
    """Every assignment of values to the rule's variable references, in libvirt's order."""
    if all(ref.index is None and ref.iterator is None for ref in refs):
        each = [_values(filter_name, variables, ref.name) for ref in refs]
        if all(len(v) == 1 for v in each):  # the common case: $MAC, $IP with one value each
            yield {ref: v[0] for ref, v in zip(refs, each)}
            return
    order, fixed = _iterators(filter_name, refs, variables)
    positions = [_unique_positions(it, variables) for it in order]
    if not order:
        yield dict(fixed)
        return
    current = [0] * len(order)
    while True:
        assignment = dict(fixed)
        for it, pos_list, index in zip(order, positions, current):
            position = pos_list[index]
            for ref in refs:
                if ref.index is None and (ref.iterator or 0) == it.id:
                    assignment[ref] = variables[ref.name][position]
        yield assignment
        for slot in range(len(order)):  # odometer, slot 0 fastest
            current[slot] += 1
            if current[slot] < len(positions[slot]):
                break
            current[slot] = 0
        else:
            return


def _iterators(filter_name: str, refs: list[VarRef], variables: Variables) -> tuple[list[_Iterator], dict[VarRef, str]]:
    """The rule's iterators in stepping order (@0 first, then by first use) and the values
    of its indexed references; the product of the iterators' lengths bounds its instances."""
    iterators: dict[int, _Iterator] = {}
    fixed: dict[VarRef, str] = {}
    for ref in refs:
        values = _values(filter_name, variables, ref.name)
        if ref.index is not None:
            if ref.index >= len(values):
                raise VirtfwError(
                    f"filter '{filter_name}': {ref} is out of range: ${ref.name} has {len(values)} value(s)"
                )
            fixed[ref] = values[ref.index]
            continue
        iter_id = ref.iterator or 0
        it = iterators.setdefault(iter_id, _Iterator(iter_id, [], len(values)))
        if ref.name not in it.names:
            if it.names and it.length != len(values):
                raise VirtfwError(
                    f"filter '{filter_name}': variables iterated together with [@{iter_id}] "
                    f"must have lists of the same length (${it.names[0]} has {it.length}, ${ref.name} {len(values)})"
                )
            it.names.append(ref.name)
    return sorted(iterators.values(), key=lambda it: it.id != 0), fixed


def _unique_positions(it: _Iterator, variables: Variables) -> list[int]:
    seen: set[tuple[str, ...]] = set()
    positions = []
    for position in range(it.length):
        key = tuple(variables[name][position] for name in it.names)
        if key not in seen:
            seen.add(key)
            positions.append(position)
    return positions
