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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from virtfw.errors import VirtfwError
from virtfw.filter.model import Binding, Filter, FilterRef, FilterRule, VarRef
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


def instantiate(binding: Binding, lookup: Lookup) -> PortRules:
    rules: list[PortRule] = []
    _walk(lookup(binding.filter), binding_variables(binding), lookup, [binding.filter], rules)
    return PortRules(binding.portdev, binding_owner(binding.portdev), tuple(rules))


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

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name) :] + [name]
            raise VirtfwError(f"filter '{root.name}': filterref cycle {' -> '.join(cycle)}")
        try:
            current = root if name == root.name else lookup(name)
        except VirtfwError:
            return
        for ref in current.references():
            visit(ref, path + [name])

    visit(root.name, [])


def _walk(filt: Filter, variables: Variables, lookup: Lookup, path: list[str], out: list[PortRule]) -> None:
    for entry in filt.entries:
        if isinstance(entry, FilterRule):
            out.extend(_cached_instances(filt, entry, variables))
            continue
        assert isinstance(entry, FilterRef)
        if entry.filter in path:
            cycle = path[path.index(entry.filter) :] + [entry.filter]
            raise VirtfwError(f"filterref cycle {' -> '.join(cycle)}")
        try:
            child = lookup(entry.filter)
        except VirtfwError:
            raise VirtfwError(
                f"filter '{filt.name}' references filter '{entry.filter}', which is not defined"
            ) from None
        merged = {name: list(values) for name, values in entry.params.items()}
        merged.update(variables)
        _walk(child, merged, lookup, path + [entry.filter], out)


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
    refs = [value for value in match.attrs.values() if isinstance(value, VarRef)] if match else []
    number = 1 + sum(1 for entry in filt.entries[: _position(filt, rule)] if isinstance(entry, FilterRule))
    origin = f"filter '{filt.name}', rule {number} ({rule.action} {rule.direction}"
    origin += f" {match.protocol}, priority {rule.priority})" if match else f", priority {rule.priority})"
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
    order = sorted(iterators.values(), key=lambda it: it.id != 0)  # @0 first, then by first use
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


def _unique_positions(it: _Iterator, variables: Variables) -> list[int]:
    seen: set[tuple[str, ...]] = set()
    positions = []
    for position in range(it.length):
        key = tuple(variables[name][position] for name in it.names)
        if key not in seen:
            seen.add(key)
            positions.append(position)
    return positions
