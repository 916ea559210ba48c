"""Time-to-revoke metrics count real revocations only: per provider, dry runs excluded,
failures counted against the objective (issue: the SLO looked green while a revocation
failed)."""

from __future__ import annotations

from connectors.base.provider import UNVERIFIED, VERIFIED, Verification
from streams.model.records import Action
from streams.runtime.executor import Outcome
from streams.runtime.plans import observe_revocations
from streams.support.metrics import REGISTRY

ACCEPTED = 1000.0


def _revoke(provider: str) -> Action:
    return Action.make(
        "revoke_sessions",
        identity="ana",
        account=None,
        provider=provider,
        cause="hr:terminated:e1",
        params={"user_ref": "ana"},
    )


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _snapshot() -> dict[str, float]:
    return {
        "ttr": _value("accessguard_time_to_revoke_seconds_count"),
        "ttr_fast": _value("accessguard_time_to_revoke_seconds_bucket", le="1.0"),
        "ack_okta": _value("accessguard_revocation_acknowledge_seconds_count", provider="okta-t"),
        "ack_entra": _value("accessguard_revocation_acknowledge_seconds_count", provider="entra-t"),
        "fail_entra": _value("accessguard_revocation_failures_total", provider="entra-t"),
        "unrevoked": _value("accessguard_offboardings_unrevoked_total"),
    }


def _delta(before: dict[str, float]) -> dict[str, float]:
    after = _snapshot()
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


def test_every_revocation_done_for_real_counts_once_per_provider_and_overall() -> None:
    before = _snapshot()
    observe_revocations(
        [
            (_revoke("okta-t"), Outcome("done", 1, finished_at=ACCEPTED + 0.2), None),
            (_revoke("entra-t"), Outcome("done", 1, finished_at=ACCEPTED + 0.4), None),
        ],
        ACCEPTED,
    )
    assert _delta(before) == {"ttr": 1, "ttr_fast": 1, "ack_okta": 1, "ack_entra": 1}


def test_a_failed_revocation_makes_the_offboarding_unrevoked_not_fast() -> None:
    """One provider failed for good: its failure is counted, the offboarding is unrevoked
    (the SLO ratio counts it as over the objective) and no time to revoke is observed, even
    though the other provider answered in 0.2 s."""
    before = _snapshot()
    observe_revocations(
        [
            (_revoke("okta-t"), Outcome("done", 1, finished_at=ACCEPTED + 0.2), None),
            (
                _revoke("entra-t"),
                Outcome("failed", 3, error="401", finished_at=ACCEPTED + 0.3),
                None,
            ),
        ],
        ACCEPTED,
    )
    assert _delta(before) == {"ack_okta": 1, "fail_entra": 1, "unrevoked": 1}


def test_dry_runs_revoke_nothing_and_count_nowhere() -> None:
    before = _snapshot()
    observe_revocations(
        [
            (_revoke("okta-t"), Outcome("dry_run", 0, finished_at=ACCEPTED + 0.01), None),
            (_revoke("entra-t"), Outcome("dry_run", 0, finished_at=ACCEPTED + 0.01), None),
        ],
        ACCEPTED,
    )
    assert _delta(before) == {}


def test_a_partly_dry_offboarding_is_not_a_time_to_revoke() -> None:
    """A real acknowledgement is counted for its provider, but the offboarding as a whole did
    not revoke everything for real, so it is no sample of the objective."""
    before = _snapshot()
    observe_revocations(
        [
            (_revoke("okta-t"), Outcome("done", 1, finished_at=ACCEPTED + 0.2), None),
            (_revoke("entra-t"), Outcome("dry_run", 0, finished_at=ACCEPTED + 0.01), None),
        ],
        ACCEPTED,
    )
    assert _delta(before) == {"ack_okta": 1}


def test_a_revocation_read_back_as_not_done_makes_the_offboarding_unrevoked() -> None:
    """Acknowledged is not done: a revocation whose read-back failed keeps the offboarding
    out of the time-to-revoke objective and counts it as unrevoked."""
    before = _snapshot()
    observe_revocations(
        [
            (
                _revoke("okta-t"),
                Outcome("done", 1, finished_at=ACCEPTED + 0.2),
                Verification(UNVERIFIED, {"status": "ACTIVE"}, "still active"),
            ),
            (
                _revoke("entra-t"),
                Outcome("done", 1, finished_at=ACCEPTED + 0.3),
                Verification(VERIFIED, {"accountEnabled": False}),
            ),
        ],
        ACCEPTED,
    )
    assert _delta(before) == {"ack_okta": 1, "ack_entra": 1, "unrevoked": 1}
