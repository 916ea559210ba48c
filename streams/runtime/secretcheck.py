"""Every configured secret must resolve where it is used — checked at start, watched after.

A secret given as ``env:NAME`` whose variable is unset (or empty) used to fail silently: the
HR webhook answered every termination with 401 and ``/readyz`` stayed 200. Now, for the
secrets a process uses (:func:`secret_uses`):

- one that does not resolve and cannot appear later (``env:``, inline) stops start-up with a
  :class:`~streams.support.errors.ConfigError` naming every such key;
- a ``file:`` one (a Kubernetes secret may be mounted, or rotated in, after start) is logged
  at error level and keeps the ``secrets`` readiness check false until it resolves
  (:class:`SecretWatch`);
- one the process does not use (a dry-run provider's token, the HR secret in a bare worker)
  is only mentioned, once, at info level.

``accessguard config check`` asks :func:`reference_problems`: every secret ``accessguard run``
would use must resolve now, ``file:`` ones included (the check runs where the secrets are
mounted, or is told not to look with ``--no-secrets``).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from streams.config import SECRET_KEYS, Config
from streams.config.ssf import secrets_of as ssf_secrets
from streams.support.errors import ConfigError, ConfigProblem
from streams.support.secrets import Secret

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SecretUse:
    """One configured secret: its key, the secret, and whether this process uses it."""

    path: str
    secret: Secret
    needed: bool


def _dry(settings: dict[str, Any]) -> bool:
    return settings.get("dry_run") is True


def secret_uses(
    config: Config,
    *,
    serve_hr: bool = False,
    serve_ingest: bool = False,
    execute: bool = False,
    pollers: Iterable[str] = (),
    leaks: bool = False,
    doors: Collection[str] = (),
) -> list[SecretUse]:
    """The configured secrets, marked ``needed`` by what this process does: ``serve_hr``
    (the HR endpoint), ``serve_ingest`` (the login and leak endpoints), ``execute``
    (provider actions and alert sinks),
    ``pollers`` (the names it runs), ``leaks`` (parses leaks: the HMAC key), ``doors``
    (``worker.doors`` a bare worker serves, or ``transmitter``: the SSF transmitter). Raises
    ConfigError when the HR endpoint is served with neither ``hr.webhook_secret`` nor
    ``hooks.standard_webhooks_secret`` (either scheme alone is enough)."""
    uses: list[SecretUse] = []
    fixed = {
        "hr.webhook_secret": serve_hr,
        # the SCIM service runs where the registry view is: `run`, a worker with the door
        "scim.token": (serve_hr and execute) or "scim" in doors,
        "hooks.standard_webhooks_secret": serve_hr,
        "hooks.event_hook_secret": serve_hr,
        "auth.ingest_token": serve_ingest,
        "leaks.ingest_token": serve_ingest,
        "leaks.hmac_key": leaks or serve_ingest or execute,
        # every process that reaches an external broker connects with these
        "kafka.key_password": not config.embedded,
        "kafka.sasl_password": not config.embedded,
    }
    if serve_hr and not _hr_signed(config):
        raise ConfigError(
            "hr.webhook_secret",
            "required to serve POST /v1/hr/events, unless hooks.standard_webhooks_secret is "
            "set (a sender that signs with Standard Webhooks only): set either "
            "(file:/path or env:NAME)",
        )
    for path, needed in fixed.items():
        secret = config[path]
        if secret is not None:
            uses.append(SecretUse(path, secret, needed))
    # Shared Signals (streams/runtime/ssfpart.py): all of it in `run`; the receiving side
    # (ssf.transmitters.*) in a worker with the ssf door; the signing key and the receivers'
    # tokens in the transmitter; none in `connect hr-webhook` (serve_hr without execute).
    everything = serve_hr and execute
    for p, s in ssf_secrets(config.settings.ssf):
        side = "ssf" if p.startswith("ssf.transmitters.") else "transmitter"
        uses.append(SecretUse(p, s, everything or side in doors))
    executing = execute and not config["executor.dry_run"]
    running = set(pollers)
    sections: tuple[tuple[str, dict[str, dict[str, Any]]], ...] = (
        ("providers", config.providers),
        ("alerts.sinks", config.sinks),
        ("pollers", config.pollers),
    )
    for section, entries in sections:
        for name, settings in entries.items():
            if section == "providers":
                used = executing and not _dry(settings)
            elif section == "alerts.sinks":
                used = execute and not _dry(settings)
            else:
                used = name in running
            for key, value in settings.items():
                if key in SECRET_KEYS and isinstance(value, Secret):
                    uses.append(SecretUse(f"{section}.{name}.{key}", value, used))
    return uses


def _hr_signed(config: Config) -> bool:
    """Whether POST /v1/hr/events can verify a sender: by either signature scheme."""
    return (
        config["hr.webhook_secret"] is not None
        or config["hooks.standard_webhooks_secret"] is not None
    )


def reference_problems(config: Config) -> tuple[list[ConfigProblem], list[str]]:
    """For ``accessguard config check``: a located problem for each secret ``accessguard
    run`` would use (and the HR secrets when either is set) whose reference does not resolve
    now (``env:`` unset or empty, ``file:`` missing, unreadable or empty, inline empty); and
    the keys of the unresolved ones it would not use (dry run), which are not problems."""
    uses = secret_uses(
        config,
        serve_hr=_hr_signed(config),
        serve_ingest=True,
        execute=True,
        pollers=config.pollers,
        leaks=True,
    )
    problems: list[ConfigProblem] = []
    unused: list[str] = []
    for use in uses:
        problem = use.secret.problem()
        if problem is None:
            continue
        if use.needed:
            reason = f"secret ({use.secret.reference}) does not resolve: {problem}"
            problems.append(ConfigProblem(use.path, reason, config.locate(use.path)))
        else:
            unused.append(use.path)
    return problems, unused


def check_secrets(uses: Iterable[SecretUse]) -> SecretWatch:
    """Refuse to start on a needed secret that cannot resolve and cannot appear later;
    return the watch over the needed ``file:`` ones (the ``secrets`` readiness check)."""
    errors: list[str] = []
    unused: list[str] = []
    watched: list[SecretUse] = []
    for use in uses:
        if use.needed and use.secret.can_appear_later:
            watched.append(use)
            continue
        problem = use.secret.problem()
        if problem is None:
            continue
        if use.needed:
            errors.append(f"{use.path} ({use.secret.reference}): {problem}")
        else:
            unused.append(use.path)
    if errors:
        first = errors[0].split(" ", 1)[0]
        raise ConfigError(first, "secret does not resolve: " + "; ".join(errors))
    if unused:
        log.info(
            "secrets.unused_unresolved",
            keys=unused,
            note="not used by this process (dry run, or another service's); set them before "
            "they are",
        )
    watch = SecretWatch(watched)
    watch.ready()  # logs at error level, now, what does not resolve yet
    return watch


class SecretWatch:
    """The needed ``file:`` secrets: :meth:`ready` is False while one cannot be read (checked
    at most every ``interval`` seconds), with one error log line when a secret fails and
    one info line when it recovers."""

    def __init__(self, uses: Iterable[SecretUse], interval: float = 1.0) -> None:
        self.uses = list(uses)
        self.interval = interval
        self._checked = float("-inf")
        self._failing: dict[str, str] = {}

    def ready(self) -> bool:
        now = time.monotonic()
        if self.uses and now - self._checked >= self.interval:
            self._checked = now
            for use in self.uses:
                problem = use.secret.problem()
                if problem is not None and use.path not in self._failing:
                    log.error(
                        "secret.unavailable",
                        key=use.path,
                        source=use.secret.reference,
                        problem=problem,
                        effect="not ready; what needs it is refused until it resolves",
                    )
                    self._failing[use.path] = problem
                elif problem is None and use.path in self._failing:
                    del self._failing[use.path]
                    log.info("secret.available", key=use.path, source=use.secret.reference)
        return not self._failing
