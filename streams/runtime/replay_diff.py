"""``accessguard replay --diff OLD_RULES_DIR``: one input replayed with two rule sets, and what
would fire differently — the review step before promoting a staged rule or retuning one.

Both runs are the ordinary offline replay (:func:`streams.runtime.replay.replay`: same clock,
same registry, fresh lifecycle and rule state each), so the difference is the rules' alone.
A detection is identified by its rule and the event it fired on (login and identity lines) or
by its alert's dedup key (leak lines, whose key already names breach, subject and rule).
Deduplicated and suppressed detections did not alert, so they count as not fired; a rule that
raised is reported as such rather than as "removed".

Output, one JSON object per line, sorted by rule then event::

    {"type":"diff","change":"added","rule","event_id","identity","severity","actions","response"}
    {"type":"diff","change":"removed", ...the same keys, from the old rule set}
    {"type":"diff","change":"changed","rule","event_id","identity",
     "old":{"severity","actions","response"},"new":{...}}
    {"type":"diff_summary","added":N,"removed":N,"changed":N,"unchanged":N,
     "errors_old":N,"errors_new":N}

``response`` is what the rule declares (``page``/``notify`` included, so a route change shows);
``actions`` are the action kinds actually built (a staged rule builds none; a leak line's
actions belong to its record, not to one rule, so leak detections compare severity and
response only).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from streams.decide.leaks import LeakSettings
from streams.decide.policy import DEFAULT_POLICY, OffboardingPolicy
from streams.detect.model import RuleSet
from streams.model.registry import Registry
from streams.runtime.replay import replay

Key = tuple[str, str]


def _fired(
    registry: Registry,
    lines: list[str],
    rules: RuleSet,
    *,
    at: datetime,
    providers: Mapping[str, str],
    leak_settings: LeakSettings | None,
    policy: OffboardingPolicy,
) -> tuple[dict[Key, dict[str, Any]], int]:
    """(rule, event) -> what fired, and how many rule errors, for one rule set."""
    declared = {r.id: list(r.response) for r in rules.rules}
    fired: dict[Key, dict[str, Any]] = {}
    errors = 0
    for obj in replay(
        registry,
        lines,
        at=at,
        providers=providers,
        rules=rules,
        leak_settings=leak_settings,
        policy=policy,
    ):
        kind = obj["type"]
        if kind == "rule_error":
            errors += 1
        elif kind == "detection" and not obj["deduplicated"]:
            fired[(obj["rule"], obj["event_id"])] = {
                "rule": obj["rule"],
                "event_id": obj["event_id"],
                "identity": obj["identity"],
                "severity": obj["severity"],
                "actions": sorted(set(obj["actions"])),
                "response": declared.get(obj["rule"], []),
            }
        elif kind == "alert" and obj["rule"] in declared and obj["dedup_key"].startswith("leak:"):
            # a leak rule fired (leak lines print no detection object; the key names the
            # breach, the subject and the rule)
            fired[(obj["rule"], obj["dedup_key"])] = {
                "rule": obj["rule"],
                "event_id": obj["dedup_key"],
                "identity": obj["identity"],
                "severity": obj["severity"],
                "actions": [],
                "response": declared[obj["rule"]],
            }
    return fired, errors


def _view(found: Mapping[str, Any]) -> dict[str, Any]:
    return {k: found[k] for k in ("severity", "actions", "response")}


def replay_diff(
    registry: Registry,
    lines: Iterable[str],
    *,
    at: datetime,
    providers: Mapping[str, str],
    old_rules: RuleSet,
    new_rules: RuleSet,
    leak_settings: LeakSettings | None = None,
    policy: OffboardingPolicy = DEFAULT_POLICY,
) -> Iterator[dict[str, Any]]:
    """Replay ``lines`` with ``old_rules`` and with ``new_rules`` and yield the differences,
    then a summary (see the module docstring)."""
    text = list(lines)
    kw: dict[str, Any] = {
        "at": at,
        "providers": providers,
        "leak_settings": leak_settings,
        "policy": policy,
    }
    old, errors_old = _fired(registry, text, old_rules, **kw)
    new, errors_new = _fired(registry, text, new_rules, **kw)
    counts = {"added": 0, "removed": 0, "changed": 0, "unchanged": 0}
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if before is None and after is not None:
            counts["added"] += 1
            yield {"type": "diff", "change": "added", **after}
        elif after is None and before is not None:
            counts["removed"] += 1
            yield {"type": "diff", "change": "removed", **before}
        elif before is not None and after is not None:
            if _view(before) == _view(after):
                counts["unchanged"] += 1
                continue
            counts["changed"] += 1
            yield {
                "type": "diff",
                "change": "changed",
                "rule": after["rule"],
                "event_id": after["event_id"],
                "identity": after["identity"],
                "old": _view(before),
                "new": _view(after),
            }
    yield {"type": "diff_summary", **counts, "errors_old": errors_old, "errors_new": errors_new}
