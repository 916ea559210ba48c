"""`accessguard replay --diff OLD_RULES_DIR`: one input, two rule sets, only what fires
differently (added, removed, changed severity or response), then a summary."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner

from streams.cli import main

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "attack_failures_then_success.ndjson"
CLEAN_ENV = {k: None for k in os.environ if k.startswith("ACCESSGUARD_")}


def old_rules(tmp_path: Path) -> Path:
    """The shipped rules as they were before: no failures_then_success, impossible_travel
    promoted to critical with a page, and a rule since deleted that fired on every success."""
    old = tmp_path / "old"
    shutil.copytree(REPO / "rules", old)
    (old / "failures_then_success.yaml").unlink()
    travel = old / "impossible_travel.yaml"
    text = travel.read_text(encoding="utf-8")
    assert "severity: high" in text
    travel.write_text(text.replace("severity: high", "severity: critical"), encoding="utf-8")
    gone = (REPO / "rules" / "brute_force_identity.yaml").read_text(encoding="utf-8")
    gone = gone.replace("id: brute_force_identity", "id: every_success")
    gone = gone.replace("kind: threshold", "kind: match").replace(
        "threshold: {window: 600, count: 10}\n", ""
    )
    gone = gone.replace(
        "{field: outcome, op: eq, value: failure}", "{field: outcome, op: eq, value: success}"
    )
    (old / "every_success.yaml").write_text(gone.split("tests:")[0] + TESTS, encoding="utf-8")
    return old


TESTS = """tests:
  - {name: a success, expect: fire, events: [{identity: alice, outcome: success}]}
  - {name: a failure, expect: no_fire, events: [{identity: alice, outcome: failure}]}
"""


def diff(old: Path) -> list[dict[str, Any]]:
    result = CliRunner().invoke(
        main,
        [
            "replay",
            "--config",
            str(REPO / "examples" / "config.yaml"),
            "--registry",
            str(REPO / "examples" / "registry.yaml"),
            "--input",
            str(FIXTURE),
            "--at",
            "2026-11-25T00:00:00Z",
            "--rules",
            str(REPO / "rules"),
            "--diff",
            str(old),
        ],
        env=CLEAN_ENV,
    )
    assert result.exit_code == 0, result.output
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def test_diff_prints_added_removed_and_changed_detections(tmp_path: Path) -> None:
    """The new rule's detection is added (with its response), the deleted rule's detections
    are removed, the retuned rule's severity change is shown old against new, and the rules
    that fire the same are left out but counted."""
    out = diff(old_rules(tmp_path))
    changes = [(o["change"], o["rule"], o.get("identity")) for o in out if o["type"] == "diff"]
    added = [c for c in changes if c[0] == "added"]
    assert added == [("added", "failures_then_success", "alice")]
    removed = [c for c in changes if c[0] == "removed"]
    assert {c[1] for c in removed} == {"every_success"}
    assert {c[2] for c in removed} == {"alice", "bob", "carol", "dan"}
    [changed] = [o for o in out if o["type"] == "diff" and o["change"] == "changed"]
    assert changed["rule"] == "impossible_travel"
    assert changed["old"]["severity"] == "critical"
    assert changed["new"]["severity"] == "high"
    new = next(o for o in out if o["type"] == "diff" and o["change"] == "added")
    assert new["severity"] == "critical"
    assert new["response"] == [
        "revoke_sessions",
        "expire_password",
        "force_mfa_reenrolment",
        "page",
    ]
    assert new["actions"] == ["expire_password", "force_mfa_reenrolment", "revoke_sessions"]
    [summary] = [o for o in out if o["type"] == "diff_summary"]
    assert summary["added"] == 1
    assert summary["removed"] == len(removed)
    assert summary["changed"] == 1
    assert summary["unchanged"] >= 1  # new_country_for_privileged fires the same in both
    assert summary["errors_old"] == summary["errors_new"] == 0
    assert out[-1] == summary


def test_diff_against_the_same_rules_is_empty(tmp_path: Path) -> None:
    """The same rule set on both sides: no diff line, only the summary."""
    same = tmp_path / "same"
    shutil.copytree(REPO / "rules", same)
    out = diff(same)
    assert [o["type"] for o in out] == ["diff_summary"]
    assert out[0]["added"] == out[0]["removed"] == out[0]["changed"] == 0


def test_a_changed_response_is_a_change(tmp_path: Path) -> None:
    """Same severity, a response without the page: reported as changed (the route moves)."""
    old = tmp_path / "old"
    shutil.copytree(REPO / "rules", old)
    path = old / "failures_then_success.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(", page]", "]"), encoding="utf-8")
    out = diff(old)
    [changed] = [o for o in out if o["type"] == "diff"]
    assert changed["change"] == "changed"
    assert "page" not in changed["old"]["response"]
    assert "page" in changed["new"]["response"]
