"""Shared test helpers: namespaces, topologies, fault injection, the fake runner."""
