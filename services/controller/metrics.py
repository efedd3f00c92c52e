"""Prometheus metrics and health of the controller."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

# The loop polls every 100 ms; this long without a turn means it is stuck.
STUCK_AFTER_S = 30.0


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.active = Gauge(
            "mint_controller_active",
            "1 on the controller that publishes, 0 on standbys",
            registry=r,
        )
        self.live_nodes = Gauge("mint_controller_live_nodes", "Nodes reporting", registry=r)
        self.wanted = Gauge(
            "mint_controller_wanted_groups",
            "Adapter revisions (or stacks) the controller keeps placed",
            registry=r,
        )
        self.hot = Gauge(
            "mint_controller_hot_groups", "Groups wanted on more than one node", registry=r
        )
        self.intents = Gauge(
            "mint_controller_intents", "Residency intents in the published plan", registry=r
        )
        self.expired = Counter(
            "mint_controller_wants_expired_total",
            "Groups no longer kept placed: not demanded for want_idle_s",
            registry=r,
        )
        self.replans = Counter(
            "mint_controller_replans_total", "Plans that changed the desired table", registry=r
        )
        self.changes = Counter(
            "mint_controller_intent_changes_total",
            "Intents published, by kind",
            ["kind"],
            registry=r,
        )
        self._last_turn = time.monotonic()

    def turned(self) -> None:
        """The control loop completed a turn."""
        self._last_turn = time.monotonic()

    def problem(self) -> str | None:
        idle = time.monotonic() - self._last_turn
        return f"control loop idle for {idle:.0f} s" if idle > STUCK_AFTER_S else None

    def render(self) -> bytes:
        return generate_latest(self.registry)
