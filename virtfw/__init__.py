"""virtfw: libvirt-style virtual networks and network filters without libvirt."""

__version__ = "0.1.0"
