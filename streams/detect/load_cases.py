"""Parsing a rule's inline ``tests:`` cases (what ``accessguard rules test`` runs): each case's
events become canonical :class:`~streams.model.records.LoginEvent` records (``at`` seconds after
:data:`TEST_EPOCH` or the case's ``start``) or, for a leak rule,
:class:`~streams.detect.fields.LeakSubject` pairs; see the schema in :mod:`streams.detect.model`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node

from streams.detect.fields import LeakSubject
from streams.detect.identity_fields import case_identity_event
from streams.detect.load_values import plain_data, read_number, read_strings
from streams.detect.model import ALERT_ONLY, EXPECTS, RESPONSES, RuleTest
from streams.model.identity import IdentityEvent
from streams.model.records import IDENTITY_STATUSES, LeakRecord, LoginEvent
from streams.support.errors import ValidationError
from streams.support.times import format_time
from streams.support.yamlcheck import Entry, Problems, line_of

#: Rule tests' ``at: <seconds>`` is relative to this instant unless the case sets ``start``.
#: Rule tests' ``at: <seconds>`` is relative to this instant unless the case sets ``start``.
TEST_EPOCH = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_TEST_KEYS = {"name", "expect", "events", "lifecycle", "registry", "actions", "start", "flush_at"}
_TEST_EVENT_EXTRA = {"at"}


def _test_identity(
    t: Entry,
    node: Node,
    *,
    index: int,
    start: datetime,
    rule_id: str,
    case: int,
    problems: Problems,
) -> IdentityEvent | None:
    """One identity_event rule's test event (canonical IdentityEvent fields and ``at``)."""
    where = f"{t.where}: events[{index}]"
    if not isinstance(node, MappingNode):
        problems.add(line_of(node), f"{where}: expected a mapping of IdentityEvent fields")
        return None
    try:
        data = plain_data(t.constructor.construct_object(node, deep=True))
        return case_identity_event(data, start=start, index=index, rule_id=rule_id, case=case)
    except ValidationError as exc:
        problems.add(line_of(node), f"{where}: {exc.reason}")
    except Exception as exc:  # noqa: BLE001 - any YAML construction problem is a load error
        problems.add(line_of(node), f"{where}: {exc}")
    return None


def _test_event(
    t: Entry,
    node: Node,
    *,
    index: int,
    start: datetime,
    rule_id: str,
    case: int,
    problems: Problems,
) -> LoginEvent | None:
    where = f"{t.where}: events[{index}]"
    if not isinstance(node, MappingNode):
        problems.add(line_of(node), f"{where}: expected a mapping of LoginEvent fields")
        return None
    try:
        data = plain_data(t.constructor.construct_object(node, deep=True))
    except Exception as exc:  # noqa: BLE001 - any YAML construction problem is a load error
        problems.add(line_of(node), f"{where}: {exc}")
        return None
    if not isinstance(data, dict):  # pragma: no cover - a MappingNode constructs a dict
        problems.add(line_of(node), f"{where}: expected a mapping")
        return None
    at = data.pop("at", None)
    if at is not None:
        if isinstance(at, bool) or not isinstance(at, int | float):
            problems.add(line_of(node), f"{where}: at: expected seconds after the case start")
            return None
        if "time" in data:
            problems.add(line_of(node), f"{where}: give either time or at, not both")
            return None
        data["time"] = format_time(start + timedelta(seconds=at))
    data.setdefault("time", format_time(start + timedelta(seconds=index)))
    data.setdefault("event_id", f"{rule_id}-t{case}-e{index}")
    if "principal" not in data:
        ident = data.get("identity")
        data["principal"] = f"{ident}@example.test" if ident else "someone@example.test"
    try:
        return LoginEvent.from_dict(data)
    except ValidationError as exc:
        problems.add(line_of(node), f"{where}: {exc.reason}")
        return None


def _test_leak(
    t: Entry,
    node: Node,
    *,
    index: int,
    problems: Problems,
) -> LeakSubject | None:
    """One leak-shaped test event: ``{leak: {breach, data_classes, password_present,
    breach_date, added, flags, source}, subject: {identity: ID} | {account: ID}}``."""
    where = f"{t.where}: events[{index}]"
    if not isinstance(node, MappingNode):
        problems.add(line_of(node), f"{where}: expected a mapping with leak and subject")
        return None
    try:
        data = plain_data(t.constructor.construct_object(node, deep=True))
    except Exception as exc:  # noqa: BLE001 - any YAML construction problem is a load error
        problems.add(line_of(node), f"{where}: {exc}")
        return None
    if not isinstance(data, dict):  # pragma: no cover - a MappingNode constructs a dict
        problems.add(line_of(node), f"{where}: expected a mapping")
        return None
    unknown = sorted(set(data) - {"leak", "subject"})
    leak, subject = data.get("leak"), data.get("subject")
    if unknown or not isinstance(leak, dict) or not isinstance(subject, dict):
        problems.add(
            line_of(node),
            f"{where}: a leak rule's test event is {{leak: {{...}}, subject: "
            "{identity: ID} or {account: ID}}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else ""),
        )
        return None
    if len(subject) != 1 or not isinstance(next(iter(subject.values())), str):
        problems.add(line_of(node), f"{where}: subject: exactly one of identity or account")
        return None
    ((skind, sid),) = subject.items()
    if skind not in ("identity", "account"):
        problems.add(line_of(node), f"{where}: subject: exactly one of identity or account")
        return None
    fields = dict(leak)
    if "added" in fields:
        fields["added_at"] = fields.pop("added")
    fields.setdefault("breach", "TestBreach")
    fields.setdefault("source", "rule-test")
    principal = f"{sid}@example.test" if skind == "identity" else f"shared-{sid}@example.test"
    fields.setdefault("principal", principal)
    try:
        record = LeakRecord.from_dict(fields)
    except ValidationError as exc:
        problems.add(line_of(node), f"{where}: leak: {exc.reason}")
        return None
    return LeakSubject(record, "identity" if skind == "identity" else "shared_account", sid)


def _names_type(node: Node) -> bool:
    return isinstance(node, MappingNode) and any(k.value == "type" for k, _ in node.value)


def read_tests(
    e: Entry,
    rule_id: str | None,
    problems: Problems,
    constructor: SafeConstructor,
    *,
    leak: bool = False,
    identity: bool = False,
    mixed: bool = False,
) -> list[RuleTest]:
    """The inline cases. ``mixed`` (a sequence whose first event is an identity event): an
    event with a ``type`` is an identity event, any other a login."""
    out: list[RuleTest] = []
    names: dict[str, int] = {}
    for index, node in enumerate(e.seq("tests", required=True) or ()):
        if not isinstance(node, MappingNode):
            problems.add(line_of(node), f"{e.where}: tests[{index}]: expected a mapping")
            continue
        t = Entry(node, f"{e.where}: tests[{index}]", _TEST_KEYS, problems, constructor)
        name = t.string("name", max_len=200)
        if name is not None:
            t.where = f"{e.where}: test {name!r}"
            if name in names:
                t.error(
                    t.fields["name"], f"name: duplicate test name (first at line {names[name]})"
                )
            names[name] = t.line
        expect = t.enum("expect", EXPECTS)
        start = t.time("start", required=False) or TEST_EPOCH
        flush_at: datetime | None = None
        if t.present("flush_at"):
            seconds = read_number(t, "flush_at", required=True, minimum=0)
            flush_at = start + timedelta(seconds=seconds) if seconds is not None else None
        lifecycle: dict[str, str] = {}
        life_node = t.mapping("lifecycle")
        for key_node, value_node in life_node.value if life_node is not None else ():
            key, value = t._scalar(key_node), t._scalar(value_node)
            if not isinstance(key, str) or value not in IDENTITY_STATUSES:
                t.error(
                    value_node,
                    f"lifecycle: expected <identity>: {'|'.join(IDENTITY_STATUSES)}",
                )
                continue
            lifecycle[key] = str(value)
        registry = t.string("registry", required=False)
        actions: tuple[str, ...] | None = None
        if t.present("actions"):
            listed = read_strings(t, "actions", required=True) or []
            for value, vnode in listed:
                if value not in RESPONSES or value in ALERT_ONLY:
                    t.error(vnode, f"actions: {value!r} is not an action kind")
            actions = tuple(v for v, _ in listed)
        events: list[LoginEvent | LeakSubject | IdentityEvent] = []
        ok = True
        event_nodes = t.seq("events", required=True)
        if event_nodes is not None and not event_nodes:
            t.error(t.fields["events"], "events: list at least one event")
        for i, enode in enumerate(event_nodes or ()):
            if leak:
                subject = _test_leak(t, enode, index=i, problems=problems)
                if subject is None:
                    ok = False
                else:
                    events.append(subject)
                continue
            if identity or (mixed and _names_type(enode)):
                found = _test_identity(
                    t,
                    enode,
                    index=i,
                    start=start,
                    rule_id=rule_id or "rule",
                    case=index,
                    problems=problems,
                )
                ok = ok and found is not None
                events.extend([found] if found is not None else [])
                continue
            ev = _test_event(
                t,
                enode,
                index=i,
                start=start,
                rule_id=rule_id or "rule",
                case=index,
                problems=problems,
            )
            if ev is None:
                ok = False
            else:
                events.append(ev)
        if name is None or expect is None or not ok or not events:
            continue
        out.append(
            RuleTest(
                name=name,
                expect=expect,
                events=tuple(events),
                lifecycle=lifecycle,
                registry=registry,
                actions=actions,
                flush_at=flush_at,
                line=t.line,
            )
        )
    return out
