"""What every command gets: the configuration, a runner, and a lazily chosen backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from virtfw.config import Config

if TYPE_CHECKING:
    from virtfw.rules.backend import NetworkBackend
    from virtfw.rules.runner import Runner


@dataclass
class AppContext:
    config: Config
    runner: Runner
    _backend: NetworkBackend[Any, Any] | None = field(default=None, repr=False)

    @property
    def backend(self) -> NetworkBackend[Any, Any]:
        if self._backend is None:
            from virtfw.rules.backend import select_backend

            self._backend = select_backend(self.config.requested_backend())
        return self._backend

    def backend_name(self) -> str:
        """The chosen backend's name; bindings load their own backend module by it."""
        if self._backend is not None:
            return self._backend.name
        from virtfw.rules.backend import select_backend_name

        return select_backend_name(self.config.requested_backend())

    def networks(self):
        from virtfw.net.manager import NetworkManager

        return NetworkManager(self.config, self.runner, self.backend)

    def network_status(self):
        """A manager for reading status only: no backend needed."""
        from virtfw.net.manager import NetworkManager

        return NetworkManager(self.config, self.runner, None)

    def filter_store(self):
        from virtfw.filter.store import FilterStore

        return FilterStore(self.config)

    def bindings(self, store=None, *, need_backend: bool = True):
        """A binding manager; read-only commands pass ``need_backend=False``."""
        from virtfw.cli.output import progress
        from virtfw.filter.bindings import BindingManager

        backend = self.backend_name() if need_backend else None
        manager = BindingManager(self.config, self.runner, store or self.filter_store(), backend)
        manager.progress = progress
        return manager

    def store(self):
        from virtfw.net.store import NetworkStore

        return NetworkStore(self.config)
