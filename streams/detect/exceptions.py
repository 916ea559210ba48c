"""Rule exceptions: a known, owned and dated reason why one rule must stay quiet for one
identity, IP address, network (CIDR) or country (``<rules dir>/exceptions.yaml``).

Without them the only ways to silence a noisy detection are editing the rule (for everyone)
or living with the page; both end in rules nobody trusts. An exception is data next to the
rules, reviewed like them, and it cannot be forgotten: each has an ``owner``, a ``reason`` and
an ``expires`` time, after which it stops applying by itself and is listed as expired
(``accessguard rules exceptions``, ``accessguard rules test`` and a warning when the rules are
loaded)::

    exceptions:
      - rule: failures_then_success      # a rule id of the same directory
        identity: kiosk-bot              # exactly one of identity | ip | cidr | country
        owner: secops@brand.example
        reason: the lobby kiosk retries a rotated password; ticket SEC-123 replaces it
        expires: 2026-06-30T00:00:00Z    # or a date (midnight UTC)

Scopes: ``identity`` is the registry identity id the event resolved to; ``ip`` one address;
``cidr`` a network (host bits must be zero); ``country`` as the vendor reports it (Okta gives
names such as "France", Entra codes such as "FR": compared case-insensitively, so list both
when both vendors feed the rule).

Login rules and identity-event rules (``inputs: [identity_event]``) take exceptions alike: an
identity event is matched on the identity it resolved to, the IP it came from and that IP's
country, when the vendor gives them (an identity event with no IP, such as a vendor-side
disable, is covered by an ``identity`` exception only).

The check runs on the event a rule fired on, at that event's time (event time, like every
window: a replay of last month applies last month's exceptions), and only after the rule
fired: a rule with no exception is not touched at all (its check is not even wrapped), and a
rule with exceptions pays a dict lookup per *detection*, never per event. A suppressed
detection raises no alert and takes no action; it is counted
(``accessguard_rule_suppressed_total{rule}``) and kept on the engine for the caller to report
(``accessguard replay`` prints a ``suppressed`` object).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode

from streams.model.records import Geo, LoginEvent
from streams.support import metrics
from streams.support.times import format_time
from streams.support.yamlcheck import Entry, Problems, compose, line_of

log = structlog.get_logger(__name__)

#: The file under a rules directory that holds the exceptions (not a rule: the loader skips it).
EXCEPTIONS_FILE = "exceptions.yaml"
SCOPES: tuple[str, ...] = ("identity", "ip", "cidr", "country")
_KEYS = {"rule", "owner", "reason", "expires", *SCOPES}
#: Suppressions kept on an engine for its caller to drain (replay drains after each event).
MAX_KEPT = 1000

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Subject(Protocol):
    """What an exception is matched on: a LoginEvent or an IdentityEvent."""

    @property
    def event_id(self) -> str: ...
    @property
    def time(self) -> datetime: ...
    @property
    def identity(self) -> str | None: ...
    @property
    def ip(self) -> str | None: ...
    @property
    def geo(self) -> Geo | None: ...


@dataclass(frozen=True, slots=True)
class RuleException:
    """One validated exception (see the module docstring)."""

    rule: str
    scope: str
    value: str
    owner: str
    reason: str
    expires: datetime
    source: str = ""
    line: int = 0

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def active(self, at: datetime) -> bool:
        """Applies at ``at`` (the expiry itself is already outside)."""
        return at < self.expires

    def view(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "scope": self.scope,
            "value": self.value,
            "owner": self.owner,
            "reason": self.reason,
            "expires": format_time(self.expires),
            "where": self.where,
        }


@dataclass(frozen=True, slots=True)
class Suppression:
    """A detection an exception kept quiet."""

    rule: str
    event_id: str
    identity: str | None
    exception: RuleException

    def replay_view(self) -> dict[str, Any]:
        return {
            "type": "suppressed",
            "rule": self.rule,
            "event_id": self.event_id,
            "identity": self.identity,
            "exception": self.exception.view(),
        }


def _read_one(
    node: MappingNode,
    index: int,
    rule_ids: frozenset[str] | None,
    problems: Problems,
    *,
    constructor: SafeConstructor,
    source: str,
) -> RuleException | None:
    e = Entry(node, f"exceptions[{index}]", _KEYS, problems, constructor)
    rule = e.string("rule", max_len=100)
    if rule is not None and rule_ids is not None and rule not in rule_ids:
        e.error(
            e.fields["rule"],
            f"rule: {rule!r} is not a login or identity-event rule of this directory "
            "(exceptions apply to those; a renamed or deleted rule must not leave its "
            "exceptions behind)",
        )
        rule = None
    owner = e.string("owner", max_len=200)
    reason = e.string("reason", max_len=1000)
    expires = e.time("expires", required=True)
    scopes = [s for s in SCOPES if e.present(s)]
    if len(scopes) != 1:
        e.error(
            e.line,
            f"give exactly one of {', '.join(SCOPES)} (got {', '.join(scopes) or 'none'})",
        )
        return None
    scope = scopes[0]
    value = e.string(scope, max_len=256)
    if value is not None and scope == "ip":
        try:
            value = str(ipaddress.ip_address(value))
        except ValueError:
            e.error(e.fields[scope], f"ip: {value!r} is not an IP address (a network is cidr:)")
            value = None
    elif value is not None and scope == "cidr":
        try:
            value = str(ipaddress.ip_network(value, strict=True))
        except ValueError as exc:
            e.error(e.fields[scope], f"cidr: {value!r} is not a network ({exc})")
            value = None
    if rule is None or owner is None or reason is None or expires is None or value is None:
        return None
    return RuleException(rule, scope, value, owner, reason, expires, source, line_of(node))


def parse_exceptions(
    text: str, source: str, rule_ids: Iterable[str] | None = None
) -> tuple[tuple[RuleException, ...], list[str]]:
    """Every exception in one file's text and every problem as ``path:line: message`` (an
    exception for a rule not in ``rule_ids``, the directory's login and identity-event rules,
    is a problem)."""
    problems = Problems(source)
    ids = frozenset(rule_ids) if rule_ids is not None else None
    root = compose(text, problems)
    out: list[RuleException] = []
    if root is None:
        if not problems:
            problems.add(1, "empty file: expected `exceptions:` with a list (it may be [])")
        return (), problems.render()
    if not isinstance(root, MappingNode):
        problems.add(line_of(root), "expected a mapping with an `exceptions:` list")
        return (), problems.render()
    constructor = SafeConstructor()
    top = Entry(root, "exceptions file", {"exceptions"}, problems, constructor)
    nodes = top.seq("exceptions", required=True) if "exceptions" in top.fields else None
    if nodes is None and not problems:
        top.error(top.line, "exceptions: required (a list; [] for none)")
    seen: dict[tuple[str, str, str], int] = {}
    for index, node in enumerate(nodes or ()):
        if not isinstance(node, MappingNode):
            problems.add(line_of(node), f"exceptions[{index}]: expected a mapping")
            continue
        found = _read_one(node, index, ids, problems, constructor=constructor, source=source)
        if found is None:
            continue
        key = (found.rule, found.scope, found.value.casefold())
        if key in seen:
            problems.add(
                found.line,
                f"exceptions[{index}]: the same rule and {found.scope} as line {seen[key]}",
            )
            continue
        seen[key] = found.line
        out.append(found)
    return tuple(out), problems.render()


def check_exceptions(
    directory: Path, rule_ids: Iterable[str]
) -> tuple[tuple[RuleException, ...], list[str]]:
    """``<directory>/exceptions.yaml`` (none when absent) and its problems."""
    path = directory / EXCEPTIONS_FILE
    if not path.is_file():
        return (), []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return (), [f"{path}:0: cannot read the exceptions: {exc}"]
    return parse_exceptions(text, str(path), rule_ids)


def expired(exceptions: Iterable[RuleException], at: datetime) -> list[RuleException]:
    """The exceptions no longer applying at ``at``."""
    return [x for x in exceptions if not x.active(at)]


def warn_expired(exceptions: Iterable[RuleException], at: datetime | None = None) -> None:
    """One warning per expired exception (at load: someone should renew or delete it)."""
    for x in expired(exceptions, at or datetime.now(UTC)):
        log.warning(
            "rules.exception_expired",
            rule=x.rule,
            scope=x.scope,
            owner=x.owner,
            expired=format_time(x.expires),
            where=x.where,
        )


class RuleExceptions:
    """One rule's exceptions, indexed once: identity, IP and country by value, networks in a
    short list."""

    def __init__(self, exceptions: Iterable[RuleException]) -> None:
        self.identity: dict[str, list[RuleException]] = {}
        self.ip: dict[str, list[RuleException]] = {}
        self.country: dict[str, list[RuleException]] = {}
        self.cidr: list[tuple[Network, RuleException]] = []
        for x in exceptions:
            if x.scope == "cidr":
                self.cidr.append((ipaddress.ip_network(x.value), x))
            else:
                value = x.value.casefold() if x.scope == "country" else x.value
                getattr(self, x.scope).setdefault(value, []).append(x)

    def match(self, event: Subject) -> RuleException | None:
        """The first exception active at the event's time that covers it, or None."""
        at = event.time
        candidates: list[RuleException] = []
        if event.identity is not None:
            candidates.extend(self.identity.get(event.identity, ()))
        if event.ip is not None:
            candidates.extend(self.ip.get(event.ip, ()))
            if self.cidr:
                try:
                    address = ipaddress.ip_address(event.ip)
                except ValueError:
                    address = None
                if address is not None:
                    candidates.extend(x for net, x in self.cidr if address in net)
        if event.geo is not None and event.geo.country:
            candidates.extend(self.country.get(event.geo.country.casefold(), ()))
        for x in candidates:
            if x.active(at):
                return x
        return None


Hits = list[tuple[LoginEvent, dict[str, Any]]]
#: A compiled rule's check (ctx, key, state) or its absent-sequence ``_due`` (slot, time).
Check = Callable[..., Hits]


class Suppressor:
    """Wraps the checks of the rules that have exceptions (see :meth:`guard`) and keeps what
    they suppressed for the caller (:meth:`take`)."""

    def __init__(self, exceptions: Iterable[RuleException]) -> None:
        by_rule: dict[str, list[RuleException]] = {}
        for x in exceptions:
            by_rule.setdefault(x.rule, []).append(x)
        self.by_rule: Mapping[str, RuleExceptions] = {
            rule: RuleExceptions(xs) for rule, xs in by_rule.items()
        }
        #: rule id -> detections suppressed (also in the metric).
        self.counts: dict[str, int] = dict.fromkeys(by_rule, 0)
        self._kept: deque[Suppression] = deque(maxlen=MAX_KEPT)
        self._counters: dict[str, Any] = {}

    def guard(self, compiled: Iterable[Any]) -> None:
        """Replace ``check`` of each compiled rule that has exceptions by one that drops the
        hits an active exception covers; every other rule keeps its own check untouched (its
        suppression counter is only exported, at 0)."""
        for c in compiled:
            metrics.RULE_SUPPRESSED.labels(c.id)  # exported at 0: a rate before any suppression
            found = self.by_rule.get(c.id)
            if found is None:
                continue
            c.check = self._guarded(c.id, c.check, found)
            if c.absent:  # the engine's flush() fires these through _due, not check
                c._due = self._guarded(c.id, c._due, found)

    def _guarded(self, rule_id: str, check: Check, found: RuleExceptions) -> Check:
        counter = metrics.RULE_SUPPRESSED.labels(rule_id)  # pre-bound: no labels() per hit

        def guarded(*args: Any) -> Hits:
            hits = check(*args)
            if not hits:
                return hits
            kept: Hits = []
            for subject, evidence in hits:
                x = found.match(subject)
                if x is None:
                    kept.append((subject, evidence))
                    continue
                self.counts[rule_id] += 1
                counter.inc()
                self._kept.append(Suppression(rule_id, subject.event_id, subject.identity, x))
            return kept

        return guarded

    def bind(self, rule_ids: Iterable[str]) -> None:
        """Export the suppression counter of rules evaluated without a check to wrap (identity
        rules, see :meth:`suppressed`) at 0, and pre-bind it."""
        for rule_id in rule_ids:
            self._counters[rule_id] = metrics.RULE_SUPPRESSED.labels(rule_id)

    def suppressed(self, rule_id: str, subject: Subject) -> bool:
        """Whether an active exception of ``rule_id`` covers ``subject`` (for rules whose
        caller asks once they matched: identity rules); kept and counted when it does. A dict
        lookup for a rule with no exception."""
        found = self.by_rule.get(rule_id)
        x = found.match(subject) if found is not None else None
        if x is None:
            return False
        self.counts[rule_id] += 1
        counter = self._counters.get(rule_id)
        if counter is None:
            counter = self._counters[rule_id] = metrics.RULE_SUPPRESSED.labels(rule_id)
        counter.inc()
        self._kept.append(Suppression(rule_id, subject.event_id, subject.identity, x))
        return True

    def take(self) -> list[Suppression]:
        """The suppressions since the last call (at most :data:`MAX_KEPT`, newest kept)."""
        out = list(self._kept)
        self._kept.clear()
        return out
