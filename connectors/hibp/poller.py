"""Have I Been Pwned API v3: which registry e-mail addresses appear in which breaches.

:class:`HibpFeed` is the one class of this connector (settings under ``pollers.<name>`` with
``type: hibp``). Each round it makes, through the shared HTTP policy
(:class:`~connectors.base.http.HttpClient`, one attempt per call, retried by
:func:`~connectors.base.http.call_with_retries` on 429/5xx/timeouts, honouring ``retry-after``):

* ``GET /breaches`` once: the breach catalogue (dates, data classes, ``Is*`` flags);
* ``GET /breacheddomain/{domain}`` for every configured (verified) domain: ``{alias: [breach
  names]}`` for every breached address of the domain, in one answer (HIBP does not page it;
  a large domain is a large body);
* ``GET /breachedaccount/{account}?truncateResponse=false`` for registry addresses (identity
  e-mails and shared-credential logins) outside those domains, at most
  ``max_accounts_per_round`` a round, continuing round-robin where the last round stopped.
  404 means "not pwned".

Every request carries ``hibp-api-key`` (a Secret) and ``user-agent`` (HIBP answers 403
without one). 401 (bad key) and 403 (no user agent, or a domain the subscription has not
verified) are :class:`~streams.support.errors.AuthError` with a message saying what to fix.

Breaches flagged ``IsSpamList`` or ``IsFabricated`` are skipped unless
``include_spam_lists`` / ``include_fabricated``; ``IsRetired``, ``IsStealerLog``,
``IsSensitive``, ``IsMalware`` and ``IsVerified: false`` become LeakRecord flags.

**Reported once.** The loop is the pull sources' one loop
(:class:`~connectors.base.pollers.PollLoop`: scheduling, backoff, checkpoint, status, stop);
the feed's cursor is a hash of every (breach, account) pair already handed off plus where
the account scan continues, checkpointed only after the caller's ``publish`` returned: a
crash in between reports a round again (at-least-once), and the leak decision's idempotency
keys turn that into no new effect. A failed round waits from 60 s doubling up to
``interval`` (``retry-after`` when HIBP gave one).

Settings: ``api_key`` (required, Secret), ``domains`` (list), ``user_agent``, ``base_url``
(default https://haveibeenpwned.com/api/v3), ``interval`` (seconds between rounds, default
3600), ``max_accounts_per_round`` (100), ``include_spam_lists``, ``include_fabricated``
(false).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import requests
import structlog

from connectors.base.http import (
    HttpClient,
    RetryPolicy,
    backoff_delay,
    call_with_retries,
    path_part,
    reveal,
    setting_bool,
    setting_secret,
    setting_str,
    setting_url,
)
from connectors.base.pollers import (
    CheckpointStore,
    Cursor,
    Page,
    PollLoop,
    setting_int,
)
from streams.model.records import LeakRecord, parse_date_or_time
from streams.model.registry import Registry, normalise_email
from streams.support.errors import (
    AuthError,
    ConfigError,
    PermanentError,
    ProviderError,
    RetryableError,
    ValidationError,
)

log = structlog.get_logger(__name__)

DEFAULT_BASE_URL = "https://haveibeenpwned.com/api/v3"
#: HIBP asks that the user agent "accurately describe the nature of the API consumer".
DEFAULT_USER_AGENT = "accessguard-leak-monitor/0.1"
DEFAULT_INTERVAL = 3600.0
SOURCE = "hibp"

#: HIBP flag -> LeakRecord flag. ``IsVerified`` is inverted (``unverified``).
_FLAG_FIELDS: tuple[tuple[str, str], ...] = (
    ("IsSpamList", "spam_list"),
    ("IsFabricated", "fabricated"),
    ("IsRetired", "retired"),
    ("IsStealerLog", "stealer_log"),
    ("IsSensitive", "sensitive"),
    ("IsMalware", "malware"),
)
_MAX_NAME = 200
_MAX_CLASSES = 64


# --------------------------------------------------------------------------------------------
# Breach objects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Breach:
    """One breach of HIBP's catalogue, normalised. ``name`` is HIBP's stable key (``Name``)."""

    name: str
    title: str
    domain: str
    breach_date: datetime | None
    added_at: datetime | None
    modified_at: datetime | None
    data_classes: tuple[str, ...]
    flags: tuple[str, ...]
    pwn_count: int | None = None

    def record_for(self, principal: str, source: str = SOURCE) -> LeakRecord:
        """The LeakRecord of ``principal`` seen in this breach (HIBP never has passwords
        themselves: ``password_present`` says the breach included them)."""
        return LeakRecord(
            principal=principal.strip().lower(),
            breach=self.name,
            source=source,
            breach_date=self.breach_date,
            added_at=self.added_at,
            data_classes=self.data_classes,
            password_present="Passwords" in self.data_classes,
            password_hmac=None,
            flags=self.flags,
        )


def normalise_breach(data: Any) -> Breach:
    """A breach object as ``/breaches`` or ``/breachedaccount`` (untruncated) returns it.

    Accepts both the older schema and the newer one (``Attribution``, ``DisclosureUrl``,
    logos on logos.haveibeenpwned.com); unknown extra fields are ignored. Raises
    ValidationError with the reason for an object it cannot use.
    """
    if not isinstance(data, dict):
        raise ValidationError("breach: expected a JSON object")
    name = data.get("Name")
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("Name: required")
    name = name.strip()
    if len(name) > _MAX_NAME:
        raise ValidationError(f"Name: longer than {_MAX_NAME} characters")
    title = data.get("Title")
    domain = data.get("Domain")
    classes = data.get("DataClasses")
    if classes is None:
        classes = []
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValidationError("DataClasses: expected a list of strings")
    flags: list[str] = []
    for hibp_name, flag in _FLAG_FIELDS:
        value = data.get(hibp_name, False)
        if value is None:
            continue
        if not isinstance(value, bool):
            raise ValidationError(f"{hibp_name}: expected true or false")
        if value:
            flags.append(flag)
    verified = data.get("IsVerified", True)
    if verified is not None and not isinstance(verified, bool):
        raise ValidationError("IsVerified: expected true or false")
    if verified is False:
        flags.append("unverified")
    pwn_count = data.get("PwnCount")
    if pwn_count is not None and (isinstance(pwn_count, bool) or not isinstance(pwn_count, int)):
        raise ValidationError("PwnCount: expected a whole number")
    return Breach(
        name=name,
        title=title.strip() if isinstance(title, str) and title.strip() else name,
        domain=domain.strip().lower() if isinstance(domain, str) else "",
        breach_date=parse_date_or_time(data.get("BreachDate"), "BreachDate"),
        added_at=parse_date_or_time(data.get("AddedDate"), "AddedDate"),
        modified_at=parse_date_or_time(data.get("ModifiedDate"), "ModifiedDate"),
        data_classes=tuple(c.strip() for c in classes[:_MAX_CLASSES] if c.strip()),
        flags=tuple(flags),
        pwn_count=pwn_count,
    )


class BreachCatalogue:
    """Breaches by ``Name``. The same name is the same breach: :meth:`upsert` replaces an
    entry only with one modified later (or as late), so ingesting the catalogue twice, or in
    two schema versions, never creates duplicates."""

    def __init__(self) -> None:
        self._by_name: dict[str, Breach] = {}

    def upsert(self, breach: Breach) -> str:
        """``"added"``, ``"updated"`` or ``"unchanged"``."""
        old = self._by_name.get(breach.name)
        if old is None:
            self._by_name[breach.name] = breach
            return "added"
        if old == breach:
            return "unchanged"
        if (
            old.modified_at is not None
            and breach.modified_at is not None
            and breach.modified_at < old.modified_at
        ):
            return "unchanged"  # an older copy of what we hold
        self._by_name[breach.name] = breach
        return "updated"

    def load(self, objects: Iterable[Any]) -> list[tuple[int, str]]:
        """Upsert every breach object; returns ``(index, reason)`` for those rejected."""
        rejected: list[tuple[int, str]] = []
        for index, obj in enumerate(objects):
            try:
                self.upsert(normalise_breach(obj))
            except ValidationError as exc:
                rejected.append((index, exc.reason))
        return rejected

    def get(self, name: str) -> Breach | None:
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Iterator[Breach]:
        return iter(self._by_name.values())


# --------------------------------------------------------------------------------------------
# The feed
# --------------------------------------------------------------------------------------------


def pair_key(breach: str, principal: str) -> str:
    """The checkpoint's key of one (breach, account) pair: a hash, so the checkpoint file
    holds no e-mail address."""
    return hashlib.sha256(f"{breach}\x1f{principal}".encode()).hexdigest()[:20]


@dataclass
class Round:
    """What one :meth:`HibpFeed.fetch` found: new records, pairs to checkpoint once they are
    published, rejected payloads and where the account scan continues next round."""

    records: list[LeakRecord] = field(default_factory=list)
    rejected: list[tuple[Any, str]] = field(default_factory=list)
    pairs: list[str] = field(default_factory=list)
    account_offset: int = 0
    skipped_flags: dict[str, int] = field(default_factory=dict)
    calls: int = 0


Publish = Callable[[list[LeakRecord]], Awaitable[None]]
Reject = Callable[[Any, str], Awaitable[None]]


class HibpFeed(PollLoop):
    """The HIBP client and feed. Blocking methods (every HTTP call) run in a thread; see the
    module docstring for endpoints, flags and the checkpoint."""

    vendor = "hibp"
    default_interval: ClassVar[float] = DEFAULT_INTERVAL
    min_interval: ClassVar[float] = 1.0

    def __init__(
        self,
        name: str,
        settings: Mapping[str, Any],
        http: HttpClient,
        checkpoint_store: CheckpointStore,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        prefix = f"pollers.{name}"
        checkpoint_store.path(name)  # validates the name before the settings, as ever
        self.label = f"hibp:{name}"
        self.base_url = setting_url(settings, "base_url", f"{prefix}.base_url", DEFAULT_BASE_URL)
        self._api_key = setting_secret(settings, "api_key", f"{prefix}.api_key", required=True)
        self.user_agent = setting_str(
            settings, "user_agent", f"{prefix}.user_agent", DEFAULT_USER_AGENT
        ).strip()
        if not self.user_agent:
            raise ConfigError(f"{prefix}.user_agent", "HIBP refuses requests without one")
        raw_domains = settings.get("domains") or []
        if isinstance(raw_domains, str):
            raw_domains = [d for d in raw_domains.split(",") if d.strip()]
        if not isinstance(raw_domains, list) or not all(isinstance(d, str) for d in raw_domains):
            raise ConfigError(f"{prefix}.domains", "must be a list of domain names")
        self.domains = tuple(dict.fromkeys(d.strip().lower().lstrip("@") for d in raw_domains))
        super().__init__(name, settings, http, checkpoint_store)  # reads ``interval``
        self.max_accounts = setting_int(
            settings,
            "max_accounts_per_round",
            f"{prefix}.max_accounts_per_round",
            100,
            low=0,
            high=1_000_000,
        )
        self.include_spam_lists = setting_bool(
            settings, "include_spam_lists", f"{prefix}.include_spam_lists"
        )
        self.include_fabricated = setting_bool(
            settings, "include_fabricated", f"{prefix}.include_fabricated"
        )
        #: Sleeps between retries inside a round (blocking: the round runs in a thread).
        self._retry_sleep = sleep
        #: Failed rounds: from a minute, doubling, up to the round interval.
        self._round_failure_policy = RetryPolicy(
            base_delay=60.0, max_delay=self.interval, jitter=0.1
        )

    # ---- the client: ONE request each ---------------------------------------------------

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> requests.Response:
        return self.http.request(
            self.label,
            "GET",
            f"{self.base_url}{path}",
            headers={
                "hibp-api-key": reveal(self._api_key, self.label),
                "user-agent": self.user_agent,
                "Accept": "application/json",
            },
            params=params,
            ok=(200, 404),
            classify=self._classify,
        )

    def _classify(self, provider: str, response: requests.Response) -> ProviderError | None:
        if response.status_code == 401:
            return AuthError(
                provider,
                "HTTP 401: HIBP rejected the hibp-api-key (missing, malformed or expired); "
                f"check pollers.{self.name}.api_key and the subscription",
                status=401,
            )
        if response.status_code == 403:
            return AuthError(
                provider,
                "HTTP 403: HIBP refused the request: no or a non-descriptive user-agent, or a "
                "domain this subscription has not verified; check "
                f"pollers.{self.name}.user_agent and .domains",
                status=403,
            )
        return None

    def _json(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            # A proxy page or a cut connection, not HIBP's answer: try again later.
            raise RetryableError(self.label, "response is not JSON") from None

    def breached_domain(self, domain: str) -> dict[str, list[str]]:
        """``{alias: [breach names]}`` for every breached address of ``domain`` (the part
        before ``@``); empty when none is (404)."""
        response = self._get(f"/breacheddomain/{path_part(domain, self.label, 'domain')}")
        if response.status_code == 404:
            return {}
        body = self._json(response)
        if not isinstance(body, dict):
            raise PermanentError(self.label, "breacheddomain: expected a JSON object")
        out: dict[str, list[str]] = {}
        for alias, names in body.items():
            if isinstance(alias, str) and isinstance(names, list):
                out[alias] = [n for n in names if isinstance(n, str)]
        return out

    def breached_account(self, account: str) -> list[Any]:
        """Every breach object of ``account`` (untruncated); ``[]`` when not pwned (404)."""
        response = self._get(
            f"/breachedaccount/{path_part(account, self.label, 'account')}",
            {"truncateResponse": "false", "includeUnverified": "true"},
        )
        if response.status_code == 404:
            return []
        body = self._json(response)
        if not isinstance(body, list):
            raise PermanentError(self.label, "breachedaccount: expected a JSON array")
        return body

    def breaches(self) -> list[Any]:
        """The whole breach catalogue (metadata only, no accounts)."""
        response = self._get("/breaches")
        if response.status_code == 404:
            return []
        body = self._json(response)
        if not isinstance(body, list):
            raise PermanentError(self.label, "breaches: expected a JSON array")
        return body

    # ---- one round ----------------------------------------------------------------------

    def _retry(self, fn: Callable[[], Any], what: str) -> Any:
        return call_with_retries(fn, self.http.policy, sleep=self._retry_sleep, operation=what)

    def _check_cursor(self, cursor: Cursor) -> None:
        _reported_and_offset(cursor, self.name)

    def accounts_to_check(self, registry: Registry) -> list[str]:
        """Registry addresses outside the configured domains, in a stable order: identity
        e-mails, then shared-credential logins that look like e-mail addresses."""
        seen: dict[str, None] = {}
        for identity in sorted(registry.identities.values(), key=lambda i: i.id):
            for email in identity.emails:
                seen.setdefault(normalise_email(email), None)
        for account in sorted(registry.accounts.values(), key=lambda a: a.id):
            shared = account.shared_credential
            if shared is not None and shared.login and "@" in shared.login:
                seen.setdefault(normalise_email(shared.login), None)
        return [a for a in seen if a.rpartition("@")[2] not in self.domains]

    def _keep(self, breach: Breach, out: Round) -> bool:
        skip = [
            f
            for f, included in (
                ("spam_list", self.include_spam_lists),
                ("fabricated", self.include_fabricated),
            )
            if f in breach.flags and not included
        ]
        for flag in skip:
            out.skipped_flags[flag] = out.skipped_flags.get(flag, 0) + 1
        return not skip

    def _add(self, out: Round, reported: set[str], breach: Breach, principal: str) -> None:
        key = pair_key(breach.name, principal)
        if key in reported or not self._keep(breach, out):
            return
        out.records.append(breach.record_for(principal))
        out.pairs.append(key)

    def fetch(self, registry: Registry) -> Round:
        """One round of HTTP calls (blocking; retries 429/5xx honouring ``retry-after``).
        New (breach, account) pairs only; nothing is checkpointed here (see :meth:`commit`)."""
        return self._fetch_round(registry, self.load_cursor())

    def _fetch_round(self, registry: Registry, cursor: Cursor) -> Round:
        reported, offset = _reported_and_offset(cursor, self.name)
        out = Round(account_offset=offset)
        catalogue = BreachCatalogue()
        raw = self._retry(self.breaches, "hibp.breaches")
        out.calls += 1
        for index, reason in catalogue.load(raw):
            out.rejected.append(({"breaches_index": index}, f"breach object: {reason}"))
        for domain in self.domains:
            aliases: dict[str, list[str]] = self._retry(
                functools.partial(self.breached_domain, domain), "hibp.breacheddomain"
            )
            out.calls += 1
            for alias, names in aliases.items():
                principal = normalise_email(f"{alias}@{domain}")
                for name in names:
                    breach = catalogue.get(name)
                    if breach is None:
                        # Added after the catalogue was read: the next round knows it.
                        reason = f"breach {name!r} not in /breaches"
                        out.rejected.append(({"domain": domain, "breach": name}, reason))
                        continue
                    self._add(out, reported, breach, principal)
        accounts = self.accounts_to_check(registry)
        if accounts and self.max_accounts:
            start = offset % len(accounts)
            count = min(self.max_accounts, len(accounts))
            for i in range(count):
                account = accounts[(start + i) % len(accounts)]
                objects: list[Any] = self._retry(
                    functools.partial(self.breached_account, account), "hibp.breachedaccount"
                )
                out.calls += 1
                for obj in objects:
                    try:
                        breach = normalise_breach(obj)
                    except ValidationError as exc:
                        out.rejected.append(({"breach": _name_of(obj)}, exc.reason))
                        continue
                    known = catalogue.get(breach.name)
                    self._add(out, reported, known or breach, account)
            out.account_offset = (start + count) % len(accounts)
        return out

    def _next_cursor(self, cursor: Cursor, done: Round) -> Cursor:
        reported, _ = _reported_and_offset(cursor, self.name)
        reported.update(done.pairs)
        return {"reported": sorted(reported), "account_offset": done.account_offset}

    def commit(self, done: Round) -> None:
        """Checkpoint a round whose records were published."""
        self.advance(self._next_cursor(self.load_cursor(), done))

    def _page(self, registry: Registry, cursor: Cursor) -> Page:
        """A round as the loop's page: every round ends caught up (wait ``interval``)."""
        done = self._fetch_round(registry, cursor)
        return Page(
            records=list(done.records),
            next_cursor=self._next_cursor(cursor, done),
            caught_up=True,
            rejected=done.rejected,
            summary={"calls": done.calls, "skipped": done.skipped_flags},
        )

    async def poll_once(
        self, registry: Registry, publish: Publish, reject: Reject | None = None
    ) -> float:
        """fetch (in a thread) -> publish -> checkpoint. Returns seconds to wait. Never
        raises for a failed round: it is marked in :attr:`status` and retried later."""
        return await self._round(functools.partial(self._page, registry), publish, reject)

    async def run(
        self,
        stop: asyncio.Event,
        registry: Callable[[], Registry],
        publish: Publish,
        reject: Reject | None = None,
    ) -> None:
        """Poll until ``stop`` is set; ``registry()`` gives the current registry each round."""
        await self._loop(stop, lambda: self.poll_once(registry(), publish, reject))

    # ---- the loop's hooks -----------------------------------------------------------------

    def _failure_delay(self, failures: int, exc: BaseException, stage: str) -> float:
        retry_after = exc.retry_after if isinstance(exc, RetryableError) else None
        return backoff_delay(failures, self._round_failure_policy, retry_after)

    def _log_round(self, page: Page, published: int, rejected: int) -> None:
        log.info(
            "hibp_round",
            feed=self.name,
            calls=page.summary.get("calls"),
            published=published,
            rejected=rejected,
            skipped=page.summary.get("skipped"),
        )

    def _log_failure(self, exc: BaseException, stage: str, failures: int, message: str) -> None:
        log.warning("hibp_round_failed", feed=self.name, error=str(exc)[:500], failures=failures)


def _reported_and_offset(cursor: Cursor, name: str) -> tuple[set[str], int]:
    """The pair hashes already reported and the account offset of a checkpointed cursor."""
    cursor = cursor or {}
    reported = cursor.get("reported") or []
    offset = cursor.get("account_offset") or 0
    if not isinstance(reported, list) or not isinstance(offset, int):
        raise ConfigError(
            f"pollers.{name}", "checkpoint is unreadable; restore it or delete it to report again"
        )
    return {str(k) for k in reported}, offset


def _name_of(obj: Any) -> str | None:
    name = obj.get("Name") if isinstance(obj, dict) else None
    return name[:_MAX_NAME] if isinstance(name, str) else None
