"""xtables: iptables/ip6tables for networks, ebtables + iptables/ip6tables for filters."""
