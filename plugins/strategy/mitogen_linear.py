"""Strategy ``mitogen_linear``: Ansible's ``linear`` strategy, run over Mitogen when the
controller has it installed, and plain ``linear`` (with a warning) when it has not.

Mitogen starts one Python interpreter per host and keeps it for the whole run, where Ansible
starts a new one (and copies the module) for every task. ansible.cfg points here; bench/run
measures both (README, "Benchmarks").
"""

from __future__ import annotations

from ansible.plugins.loader import strategy_loader
from ansible.utils.display import Display

try:
    import ansible_mitogen.loaders
    import ansible_mitogen.strategy
except ImportError as exc:  # Mitogen is optional: the run goes on without it
    Display().warning(f"Mitogen cannot be imported ({exc}): the plain linear strategy runs instead")
    StrategyModule = strategy_loader.get("linear", class_only=True)
else:
    _Linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)

    class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Linear):  # type: ignore[misc,valid-type]
        """The linear strategy, with Mitogen's connections and module runner."""
