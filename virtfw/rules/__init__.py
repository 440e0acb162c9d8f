"""Firewall rules: the neutral model, the tool backends, transactions and status files."""
