"""The per-kind checks of login rules (match, threshold, velocity, first_seen, sequence):
each rule compiled once into a :class:`Compiled` whose ``check`` updates the rule's slot of
:class:`~streams.detect.state.RuleState` for one event and returns the hits.

Split out of :mod:`streams.detect.engine` (which runs a rule set: ordering, keyed workers,
exceptions, building detections and alerts) so each half stays one responsibility and under
the module size limit; the checks are pure functions of the event, the group key and the
state, like the engine.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from typing import Any

from streams.detect.fields import FIELDS, LEAK_FIELDS, Ctx
from streams.detect.model import Rule, all_of, compile_condition
from streams.detect.state import DEFAULT_MAX_VALUES, MAX_PENDING, RuleState
from streams.model.records import LoginEvent

_EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _identity_group(c: Ctx) -> str:
    return c.event.identity or f"principal:{c.event.principal}"


def _group_getter(name: str) -> Callable[[Ctx], str | None]:
    if name == "identity":
        return _identity_group
    get = FIELDS[name].getter

    def group(c: Ctx) -> str | None:
        value = get(c)
        return None if value is None else f"{name}:{value}"

    return group


#: A first_seen rule refreshes a known value's time only once it is older than
#: lookback / SEEN_GRANULARITY (about 22 hours for 60 days): a value seen again within that
#: is known without a state write, so a "last seen" time can lag by that much and a value
#: counts as new after lookback minus at most 1/64 of it (60 days: 59.1 instead of 60).
#: The write per login cost dormant_holder_active ~2 us per successful login and dirtied the
#: key for the next checkpoint every time.
SEEN_GRANULARITY = 64.0


def _never(_c: Ctx) -> bool:
    return False


#: (subject event, evidence) pairs a rule's check returns; the subject is the event the
#: alert is about (the current event, or the stored first event of an absent sequence).
Hits = list[tuple[LoginEvent, dict[str, Any]]]


class Compiled:
    """A rule with its conditions compiled and its kind's check bound."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.id = rule.id
        fields = LEAK_FIELDS if rule.leak else FIELDS
        self.match = all_of(tuple(compile_condition(c, fields) for c in rule.conditions))
        self.group = _group_getter(rule.group_by)
        p = rule.params
        self.window = float(p.get("window", 0.0))
        self.count = int(p.get("count", 1))
        self.distinct = FIELDS[p["distinct"]].getter if p.get("distinct") else None
        #: first_input identity_event: the identity path records the first events
        #: (streams.detect.identity.IdentityRules.mark), so no login is ever one
        self.across = p.get("first_input") == "identity_event"
        self.first = (
            _never
            if self.across
            else all_of(tuple(compile_condition(c) for c in p.get("first", ())))
        )
        self.new = FIELDS[p["new"]].getter if p.get("new") else None
        self.then = all_of(tuple(compile_condition(c) for c in p.get("then", ())))
        self.absent = bool(p.get("absent", False))
        self.consecutive = bool(p.get("consecutive", False))
        self.value = FIELDS[p["field"]].getter if p.get("field") else None
        self.lookback = float(p.get("lookback_days", 0.0)) * 86400.0
        self.max_values = int(p.get("max_values", DEFAULT_MAX_VALUES))
        self.learn_first = bool(p.get("learn_first", True))
        self.granularity = self.lookback / SEEN_GRANULARITY
        self.max_speed = float(p.get("max_speed_kmh", 0.0))
        self.min_distance = float(p.get("min_distance_km", 0.0))
        checks: dict[str, Callable[[Ctx, str, RuleState], Hits]] = {
            "match": self._match,
            "threshold": self._threshold,
            "velocity": self._velocity,
            "first_seen": self._first_seen,
            "sequence": self._sequence,
        }
        self.check = checks[rule.kind]

    def _match(self, c: Ctx, key: str, state: RuleState) -> Hits:
        return [(c.event, {})]

    def _threshold(self, c: Ctx, key: str, state: RuleState) -> Hits:
        slot = state.slot(key, self.id)
        t = c.ts
        slot["last"] = max(t, slot.get("last", t))
        if self.distinct is not None:
            value = self.distinct(c)
            if value is None:
                return []
            seen: dict[str, float] = slot.setdefault("seen", {})
            name = str(value)
            if t > seen.get(name, -math.inf):
                seen[name] = t
            while len(seen) > self.count:
                del seen[min(seen, key=seen.__getitem__)]
            hi = max(seen.values())
            n = sum(1 for v in seen.values() if v > hi - self.window)
            if n >= self.count:
                return [(c.event, {"distinct": n, "window_s": self.window})]
            return []
        stamps: list[float] = slot.setdefault("ts", [])
        bisect.insort(stamps, t)
        if len(stamps) > self.count:
            del stamps[: len(stamps) - self.count]
        if len(stamps) == self.count and stamps[-1] - stamps[0] < self.window:
            return [(c.event, {"count": self.count, "window_s": self.window})]
        return []

    def _velocity(self, c: Ctx, key: str, state: RuleState) -> Hits:
        geo = c.event.geo
        if c.event.identity is None or geo is None or geo.lat is None or geo.lon is None:
            return []
        slot = state.slot(key, self.id)
        t = c.ts
        hits: Hits = []
        prev = slot.get("loc")
        if prev is not None and t < prev[0]:
            return []  # out of order: consecutive means in event-time order
        if prev is not None and not (
            # the same place again (the common case): distance 0, under any min_distance > 0
            self.min_distance > 0 and prev[1] == geo.lat and prev[2] == geo.lon
        ):
            dist = haversine_km(prev[1], prev[2], geo.lat, geo.lon)
            hours = (t - prev[0]) / 3600.0
            if dist >= self.min_distance:
                speed = math.inf if hours <= 0 else dist / hours
                if speed > self.max_speed:
                    hits.append(
                        (
                            c.event,
                            {
                                "distance_km": round(dist, 1),
                                "minutes": round(hours * 60, 1),
                                "speed_kmh": None if math.isinf(speed) else round(speed),
                                "from_country": prev[3],
                                "to_country": geo.country,
                            },
                        )
                    )
        slot["loc"] = [t, geo.lat, geo.lon, geo.country]
        slot["last"] = t
        return hits

    def _first_seen(self, c: Ctx, key: str, state: RuleState) -> Hits:
        value = self.value(c) if self.value is not None else None
        if value is None or c.event.identity is None:
            return []
        name = str(value)
        t = c.ts
        held = state.peek(key, self.id)
        if held is not None:
            prev_t = (held.get("seen") or {}).get(name)
            if prev_t is not None and 0.0 <= t - prev_t < self.granularity:
                # seen moments ago (most logins): known, and nothing worth a state write
                return []
        slot = state.slot(key, self.id)
        seen: dict[str, float] = slot.setdefault("seen", {})
        cutoff = t - self.lookback
        for old in [v for v, ts in seen.items() if ts <= cutoff]:
            del seen[old]
        learning = "since" not in slot
        if learning:
            slot["since"] = t
        prev = seen.get(name)
        seen[name] = t if prev is None else max(prev, t)
        while len(seen) > self.max_values:
            del seen[min(seen, key=seen.__getitem__)]
        slot["last"] = max(t, slot.get("last", t))
        if prev is not None or (learning and self.learn_first):
            return []
        known = sorted(v for v in seen if v != name)
        return [(c.event, {"new_value": name, "known_values": known[:10]})]

    def _sequence(self, c: Ctx, key: str, state: RuleState) -> Hits:
        first = self.first(c)
        if not (first or self.absent):
            kept = state.peek(key, self.id)
            firsts_kept: list[float] | None = kept.get("firsts") if kept else None
            if not firsts_kept or firsts_kept[-1] <= c.ts - self.window:
                # Nothing to follow up within the window (most logins, also those of someone
                # who failed once an hour ago): no slot, no state write.
                return []
        slot = state.slot(key, self.id)
        t = c.ts
        slot["last"] = max(t, slot.get("last", t))
        hits: Hits = []
        if self.absent:
            hits.extend(self._due(slot, t))
            pending: list[list[Any]] = slot.setdefault("pending", [])
            if self.then(c):
                pending[:] = [p for p in pending if p[0] - self.window > t]
            if first and len(pending) < MAX_PENDING:
                pending.append([t + self.window, c.event.to_dict()])
            return hits
        firsts: list[float] = slot.setdefault("firsts", [])
        if self.then(c) and self._new(c, slot):
            n = sum(1 for f in firsts if t - self.window < f <= t)
            if n >= self.count:
                hits.append((c.event, {"first_count": n, "window_s": self.window}))
                firsts.clear()
            elif self.consecutive:
                # the run ends here: only first events after this one count (one arriving
                # late, from before it, is not part of the next run either)
                del firsts[: bisect.bisect_right(firsts, t)]
        if first:
            bisect.insort(firsts, t)
            if len(firsts) > self.count:
                del firsts[: len(firsts) - self.count]
        return hits

    def _new(self, c: Ctx, slot: dict[str, Any]) -> bool:
        """With ``new``: the event's value is not among those known for the subject when
        the first event was recorded (``known``, learned by the first_seen rules on that
        field); nothing known means anything is new."""
        if self.new is None:
            return True
        value = self.new(c)
        return value is not None and str(value) not in slot.get("known", ())

    def _due(self, slot: dict[str, Any], t: float) -> Hits:
        pending: list[list[Any]] | None = slot.get("pending")
        if not pending:
            return []
        hits: Hits = []
        keep: list[list[Any]] = []
        for item in pending:
            if item[0] <= t:
                first = LoginEvent.from_dict(item[1])
                hits.append((first, {"not_followed_within_s": self.window}))
            else:
                keep.append(item)
        pending[:] = keep
        return hits
