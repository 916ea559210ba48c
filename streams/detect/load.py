"""Loading rules: :func:`load_rules` reads every ``rules/*.yaml`` with a strict schema (see
:mod:`streams.detect.model`) and collects every problem as ``path:line: message`` before
refusing to start (:class:`~streams.support.errors.RuleError`). The kind blocks and the rule
itself are checked here; conditions and values in :mod:`streams.detect.load_values`, inline
test cases in :mod:`streams.detect.load_cases`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, SequenceNode

from streams.detect.exceptions import EXCEPTIONS_FILE, check_exceptions, warn_expired
from streams.detect.fields import FIELDS, FIRST_SEEN_FIELDS, GROUP_FIELDS, LEAK_FIELDS
from streams.detect.identity import IDENTITY_INPUT
from streams.detect.identity_fields import IDENTITY_FIELDS
from streams.detect.load_cases import read_tests
from streams.detect.load_values import read_conditions, read_number, read_strings
from streams.detect.model import (
    ALERT_ONLY,
    EXPECTS,
    INPUTS,
    KINDS,
    LEAK_RESPONSES,
    RESPONSES,
    STATUSES,
    SUPPORTED_INPUTS,
    Rule,
    RuleSet,
)
from streams.detect.state import DEFAULT_MAX_VALUES
from streams.model.records import SEVERITIES
from streams.support.errors import RuleError
from streams.support.yamlcheck import Entry, Problems, compose, line_of

_RULE_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
_RULE_KEYS = {
    "id",
    "title",
    "description",
    "why",
    "status",
    "severity",
    "runbook",
    "falsepositives",
    "inputs",
    "kind",
    "group_by",
    "conditions",
    "threshold",
    "velocity",
    "first_seen",
    "sequence",
    "dedup",
    "response",
    "tests",
}
_PARAM_KEYS: dict[str, set[str]] = {
    "threshold": {"window", "count", "distinct"},
    "velocity": {"max_speed_kmh", "min_distance_km"},
    "first_seen": {"field", "lookback_days", "max_values", "learn_first"},
    "sequence": {"first", "then", "window", "count", "absent", "first_input", "new", "consecutive"},
}


def _params(
    e: Entry, kind: str, problems: Problems, constructor: SafeConstructor
) -> tuple[dict[str, Any], bool]:
    for other in _PARAM_KEYS:
        if other != kind and e.present(other):
            e.error(e.fields[other], f"{other}: only allowed with kind {other} (kind is {kind})")
    if kind == "match":
        return {}, True
    node = e.mapping(kind)
    if node is None:
        if not e.present(kind):
            e.error(e.line, f"{kind}: required with kind {kind}")
        return {}, False
    p = Entry(node, f"{e.where}: {kind}", _PARAM_KEYS[kind], problems, constructor)
    params: dict[str, Any] = {}
    ok = True

    def need(name: str, value: Any) -> None:
        nonlocal ok
        if value is None:
            ok = False
        else:
            params[name] = value

    if kind == "threshold":
        need("window", read_number(p, "window", required=True, minimum=1))
        count = read_number(p, "count", required=True, minimum=2, integer=True)
        need("count", int(count) if count is not None else None)
        distinct = p.string("distinct", required=False, max_len=64)
        if distinct is not None and distinct not in GROUP_FIELDS:
            p.error(p.fields["distinct"], f"distinct: must be one of {', '.join(GROUP_FIELDS)}")
            ok = False
        params["distinct"] = distinct
    elif kind == "velocity":
        need("max_speed_kmh", read_number(p, "max_speed_kmh", required=True, minimum=1))
        need("min_distance_km", read_number(p, "min_distance_km", required=True, minimum=0))
    elif kind == "first_seen":
        fname = p.string("field", max_len=64)
        if fname is not None and fname not in FIRST_SEEN_FIELDS:
            p.error(p.fields["field"], f"field: must be one of {', '.join(FIRST_SEEN_FIELDS)}")
            fname = None
        need("field", fname)
        need("lookback_days", read_number(p, "lookback_days", required=True, minimum=1))
        max_values = read_number(p, "max_values", required=False, minimum=1, integer=True)
        params["max_values"] = int(max_values) if max_values is not None else DEFAULT_MAX_VALUES
        params["learn_first"] = p.boolean("learn_first", default=True)
    elif kind == "sequence":
        first_input = p.enum("first_input", ("login", IDENTITY_INPUT), default="login")
        across = first_input == IDENTITY_INPUT
        params["first_input"] = first_input or "login"
        first, first_ok = read_conditions(
            p,
            "first",
            problems,
            constructor,
            required=True,
            fields=IDENTITY_FIELDS if across else FIELDS,
        )
        then, then_ok = read_conditions(p, "then", problems, constructor, required=True)
        ok = ok and first_ok and then_ok
        params["first"], params["then"] = first, then
        need("window", read_number(p, "window", required=True, minimum=1))
        count = read_number(p, "count", required=False, minimum=1, integer=True)
        params["count"] = int(count) if count is not None else 1
        params["absent"] = p.boolean("absent", default=False)
        # consecutive: a `then` event ends the run of first events before it, firing or not
        # (Elastic EQL's `runs`): five failures between a person's ordinary successes are
        # not a guessing run
        params["consecutive"] = p.boolean("consecutive", default=False)
        if params["consecutive"] and (params["absent"] or across):
            p.error(p.fields["consecutive"], "consecutive: a run of login first events")
            ok = False
        if params["absent"] and params["count"] != 1:
            p.error(p.fields["count"], "count: an absent sequence waits for one first event")
            ok = False
        new_field = p.string("new", required=False, max_len=64)
        if new_field is not None and new_field not in FIRST_SEEN_FIELDS:
            p.error(p.fields["new"], f"new: must be one of {', '.join(FIRST_SEEN_FIELDS)}")
            ok = False
        if new_field is not None and not across:
            p.error(p.fields["new"], "new: only with first_input: identity_event")
            ok = False
        params["new"] = new_field
        if across and (params["absent"] or params["count"] != 1):
            p.error(p.line, "first_input: identity_event: one first event, not absent")
            ok = False
    return params, ok


def _parse_rule(text: str, path: Path, problems: Problems) -> Rule | None:
    root = compose(text, problems)
    if root is None:
        if not problems:
            problems.add(1, "empty rule file: expected a mapping")
        return None
    if not isinstance(root, MappingNode):
        problems.add(line_of(root), "a rule must be a mapping")
        return None
    constructor = SafeConstructor()
    e = Entry(root, "rule", _RULE_KEYS, problems, constructor)
    rule_id = e.string("id", max_len=100)
    if rule_id is not None:
        if not _RULE_ID_RE.match(rule_id):
            e.error(e.fields["id"], f"id: {rule_id!r} must match [a-z][a-z0-9_]*")
        elif rule_id != path.stem:
            e.error(e.fields["id"], f"id: {rule_id!r} must equal the file name ({path.stem!r})")
        e.where = f"rule {rule_id}"
    title = e.string("title", max_len=200)
    description = e.string("description", max_len=4000)
    why = e.string("why", required=False, max_len=1000)
    status = e.enum("status", STATUSES)
    severity = e.enum("severity", SEVERITIES)
    runbook = e.string("runbook", max_len=300)
    falsepositives = read_strings(e, "falsepositives", required=True)
    inputs = read_strings(e, "inputs", required=True)
    for value, node in inputs or ():
        if value not in INPUTS:
            e.error(node, f"inputs: {value!r} is not one of {', '.join(INPUTS)}")
        elif value not in SUPPORTED_INPUTS:
            e.error(node, f"inputs: {value!r} is not evaluated by this version (use login or leak)")
    if inputs is not None and not inputs:
        e.error(e.fields["inputs"], "inputs: list at least one input kind")
    leak = any(v == "leak" for v, _ in inputs or ())
    if leak and len({v for v, _ in inputs or ()}) > 1:
        e.error(e.fields["inputs"], "inputs: a leak rule reads leak subjects only (inputs: [leak])")
    ident = any(v == IDENTITY_INPUT for v, _ in inputs or ())
    if ident and len({v for v, _ in inputs or ()}) > 1:
        e.error(e.fields["inputs"], "inputs: an identity_event rule reads those events only")
    kind = e.enum("kind", KINDS)
    what = "a leak" if leak else "an identity_event"
    if (leak or ident) and kind is not None and kind != "match":
        e.error(e.fields["kind"], f"kind: {what} rule is a match rule (got {kind})")
    if (leak or ident) and e.present("group_by"):
        e.error(e.fields["group_by"], f"group_by: {what} rule is evaluated per matched subject")
    group_by = e.string("group_by", required=False, max_len=64) or "identity"
    if group_by not in GROUP_FIELDS:
        e.error(e.fields["group_by"], f"group_by: must be one of {', '.join(GROUP_FIELDS)}")
    if kind in ("velocity", "first_seen") and group_by != "identity":
        e.error(e.fields["group_by"], f"group_by: a {kind} rule is per identity")
    conditions, cond_ok = read_conditions(
        e,
        "conditions",
        problems,
        constructor,
        required=False,
        fields=LEAK_FIELDS if leak else IDENTITY_FIELDS if ident else FIELDS,
    )
    params, params_ok = _params(e, kind, problems, constructor) if kind else ({}, False)
    dedup = read_number(e, "dedup", required=True, minimum=0)
    if leak and dedup:
        e.error(
            e.fields["dedup"],
            "dedup: a leak rule's alerts are deduplicated by breach and subject (set 0)",
        )
    allowed = LEAK_RESPONSES if leak or ident else RESPONSES
    response: list[str] = []
    for value, node in read_strings(e, "response", required=False) or ():
        if value not in allowed:
            e.error(node, f"response: {value!r} is not one of {', '.join(allowed)}")
        elif value in response:
            e.error(node, f"response: {value!r} listed twice")
        elif status is not None and status != "stable" and value not in ALERT_ONLY:
            e.error(
                node,
                f"response: {value!r} acts at a provider, which only a stable rule may do "
                f"(this rule is {status}; keep page/notify or promote it)",
            )
        else:
            response.append(value)
    tests = read_tests(
        e,
        rule_id,
        problems,
        constructor,
        leak=leak,
        identity=ident,
        mixed=params.get("first_input") == IDENTITY_INPUT,
    )
    test_node = e.fields.get("tests")
    if isinstance(test_node, SequenceNode) and len(tests) == len(test_node.value):
        expects = {t.expect for t in tests}
        for needed in EXPECTS:
            if needed not in expects:
                e.error(e.fields["tests"], f"tests: need at least one case with expect: {needed}")
    if (
        rule_id is None
        or title is None
        or description is None
        or status is None
        or severity is None
        or runbook is None
        or falsepositives is None
        or inputs is None
        or kind is None
        or dedup is None
        or not cond_ok
        or not params_ok
        or problems
    ):
        return None
    return Rule(
        id=rule_id,
        title=title,
        description=description,
        why=why or "",
        status=status,
        severity=severity,
        runbook=runbook,
        kind=kind,
        falsepositives=tuple(v for v, _ in falsepositives),
        inputs=tuple(v for v, _ in inputs),
        conditions=conditions,
        group_by=group_by,
        dedup=dedup,
        response=tuple(response),
        params=params,
        tests=tuple(tests),
        source=str(path),
        line=e.line,
    )


def parse_rule(text: str, path: str | Path) -> tuple[Rule | None, list[str]]:
    """Parse one rule's YAML text (``path`` names it: its stem must equal the id). Returns
    the rule (None when invalid) and every problem as ``path:line: message``."""
    path = Path(path)
    problems = Problems(str(path))
    rule = _parse_rule(text, path, problems)
    return rule, problems.render()


def check_rules(directory: str | Path) -> tuple[RuleSet, list[str]]:
    """Every rule in ``directory/*.yaml`` and every problem (empty list: the set is valid),
    with the directory's ``exceptions.yaml`` (not a rule; checked against the rule ids)."""
    directory = Path(directory)
    if not directory.is_dir():
        return RuleSet((), directory), [f"{directory}:0: not a directory of rules"]
    rules: list[Rule] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    paths = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    for path in paths:
        if path.name == EXCEPTIONS_FILE:
            continue
        if path.suffix == ".yml":
            problems.append(f"{path}:0: rule files end in .yaml")
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}:0: cannot read the rule: {exc}")
            continue
        rule, found = parse_rule(text, path)
        problems.extend(found)
        if rule is None:
            continue
        if rule.id in seen:
            problems.append(f"{rule.where}: duplicate rule id {rule.id!r} (also {seen[rule.id]})")
            continue
        seen[rule.id] = rule.where
        rules.append(rule)
    exceptions, found = check_exceptions(directory, [r.id for r in rules if not r.leak])
    problems.extend(found)
    return RuleSet(tuple(rules), directory, exceptions), problems


def load_rules(directory: str | Path, *, warn: bool = True) -> RuleSet:
    """Load and validate ``directory/*.yaml``; raises RuleError listing every problem. Logs a
    warning per expired rule exception unless ``warn`` is false (commands that list them)."""
    ruleset, problems = check_rules(directory)
    if problems:
        raise RuleError(problems)
    if warn:
        warn_expired(ruleset.exceptions)
    return ruleset
