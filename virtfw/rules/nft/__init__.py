"""nftables: the network backend (``ip``/``ip6`` tables) and the filter backend (``bridge`` tables)."""
