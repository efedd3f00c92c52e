"""What the controller keeps placed: each demanded group with its request rate, until it
has been idle for a while.

A group is wanted from its first demand report (or, on becoming active, from the desired
table the previous controller left) until no router has asked for it for `idle_s`; then
it is dropped with its rate, and its revisions leave the plan at the next turn, as any
revision nobody wants (their intents are tombstoned and the nodes evict them). A pinned
group never idles out. So what is kept grows with the groups in use, not with every group
ever asked for.

Rates are requests per second, smoothed over the routers' reports; silence counts as
reports of zero, so a group no longer asked for cools down (its extra replicas go)
without a report saying so. Placement is told each change it must see (`Placement.want`,
`forget`); demand times it reads as they are.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cachetools import TLRUCache

from mint.serving.placement import Group, Placement, Want

REPORT_S = 1.0  # routers report each group's requests once a second


@dataclass
class Rate:
    value: float = 0.0  # requests per second, smoothed
    at: float = 0.0  # when last reported

    def at_time(self, now: float) -> float:
        """The rate as of `now`: halved for each report missed after the last one."""
        missed = max(0.0, now - self.at - REPORT_S) / REPORT_S
        return self.value * math.exp2(-missed)


class Lapses(TLRUCache[str, bool]):
    """Group key -> pinned; an entry lapses `idle_s` after it was last set (a pinned one
    never). The cache expires entries on every write too, so what lapses is kept until
    `take` collects it (overriding `expire` is how cachetools lets a subclass see them)."""

    def __init__(self, idle_s: float, clock: Callable[[], float]) -> None:
        self.idle_s = idle_s
        self._lapsed: list[str] = []
        super().__init__(math.inf, self._lapses_at, timer=clock)

    def _lapses_at(self, _key: str, pinned: bool, now: float) -> float:
        return math.inf if pinned else now + self.idle_s

    def expire(self, time: float | None = None) -> list[tuple[str, bool]]:
        expired = list(super().expire(time))
        self._lapsed += [key for key, _ in expired]
        return expired

    def take(self) -> list[str]:
        """The keys that lapsed since the last call."""
        self.expire()
        lapsed, self._lapsed = self._lapsed, []
        return lapsed


class Wants:
    def __init__(
        self,
        placement: Placement,
        idle_s: float = 600.0,
        hot_rps: float = 5.0,
        max_replicas: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.placement, self.idle_s, self.clock = placement, idle_s, clock
        self.hot_rps, self.max_replicas = hot_rps, max_replicas
        self.rates: dict[str, Rate] = {}  # group key -> rate, for reported groups
        self._idle = Lapses(idle_s, clock)
        self._hot: set[str] = set()  # groups with more than one replica
        self.erased: set[str] = set()  # adapter ids never to be placed again

    def __len__(self) -> int:
        return len(self.placement.wants)

    @property
    def hot(self) -> int:
        return len(self._hot)

    def get(self, key: str) -> Want | None:
        return self.placement.wants.get(key)

    def values(self) -> Iterable[Want]:
        return self.placement.wants.values()

    def erase(self, adapter_id: str) -> None:
        """An erased adapter: every group with it is dropped now (its revisions leave the
        plan at the next turn) and never wanted again."""
        self.erased.add(adapter_id)
        for want in list(self.placement.wants.values()):
            if self._has_erased(want.group):
                self._drop(want.group.key)

    def _has_erased(self, group: Group) -> bool:
        return any(ref.adapter_id in self.erased for ref in group.refs)

    def note(self, group: Group, requests: int) -> None:
        """A router reported `requests` per second for `group` (or asked for it)."""
        if self._has_erased(group):
            return
        now, key = self.clock(), group.key
        rate = self.rates.setdefault(key, Rate(at=now))
        rate.value, rate.at = 0.5 * rate.at_time(now) + 0.5 * requests, now
        want = self.placement.wants.get(key)
        if want is None:
            want = Want(group, now)
            self.placement.want(want)
        want.last_demand = now
        self._idle[key] = want.pinned
        self._set_replicas(want, rate.value)

    def keep(self, group: Group, pinned: bool) -> None:
        """Want `group`, found in the desired table, as the least recently demanded (its
        routers' next reports say more); it idles out like any other unless pinned."""
        if group.key not in self.placement.wants and not self._has_erased(group):
            self.placement.want(Want(group, 0.0, pinned=pinned))
            self._idle[group.key] = pinned

    def expire(self) -> int:
        """Drop the groups idle for `idle_s` with their rates, and cool the hot ones by
        their silence; how many were dropped."""
        now = self.clock()
        expired = self._idle.take()
        for key in expired:
            self._drop(key)
        for key in list(self._hot):
            self._set_replicas(self.placement.wants[key], self.rates[key].at_time(now))
        return len(expired)

    def _drop(self, key: str) -> None:
        self.placement.forget(key)
        self.rates.pop(key, None)
        self._hot.discard(key)
        self._idle.pop(key, None)

    def _set_replicas(self, want: Want, rate: float) -> None:
        """One replica, and one more for each `hot_rps` requests per second."""
        replicas = max(1, min(self.max_replicas, 1 + int(rate / self.hot_rps)))
        if replicas > 1:
            self._hot.add(want.group.key)
        else:
            self._hot.discard(want.group.key)
        if replicas != want.replicas:
            want.replicas = replicas
            self.placement.want(want)
