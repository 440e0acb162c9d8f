"""Firewall rules, from the neutral model to the kernel.

The data flow: ``net/`` and ``filter/`` turn XML into :mod:`netrules` RuleSets (networks)
and :mod:`portrules` PortRules (filter bindings); a backend of :mod:`backend`'s two kinds,
one module per tool under ``nft/`` and ``xtables/``, spells them with its tool's
``syntax`` module, applies them as batches through :mod:`runner`, and returns typed
removal records (``*_records.py``) that the managers keep in status files.
"""
