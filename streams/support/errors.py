"""One exception tree for accessguard.

AccessGuardError
├── ConfigError            configuration keys are missing or invalid (names each key, where)
├── ValidationError        an input record is invalid (``reason`` is safe to return to the sender)
├── RegistryError          the registry file is invalid (carries every problem with file:line)
├── RuleError              the rule set is invalid (carries every problem with file:line)
├── BrokerError            the Kafka broker cannot be started or reached
├── JournalError           the durable journal cannot be written (disk full, permissions)
└── ProviderError          a provider or alert sink call failed
    ├── RetryableError     timeouts, 429, 5xx: try again after ``retry_after`` seconds
    └── PermanentError     other 4xx, bad configuration: retrying will not help
        └── AuthError      401/403: the credential for the provider is wrong or lacks a scope
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class AccessGuardError(Exception):
    """Base of every error accessguard raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One configuration problem: the dotted ``key``, what is wrong, and ``where`` it was
    given (``file:line`` of the YAML, ``env NAME`` for an environment override; None when
    only the default applies)."""

    key: str
    message: str
    where: str | None = None

    def located(self) -> str:
        """``<file>:<line>: <dotted.key>: <reason>`` (the ``accessguard config check`` line)."""
        head = f"{self.where}: " if self.where else ""
        return f"{head}{self.key}: {self.message}"


class ConfigError(AccessGuardError):
    """Configuration values are missing or invalid. ``problems`` holds every one (each names
    its key and where it was given); ``key`` is the first one's. ``str()`` is one line per
    problem, ``config <key>: <message>``, the location appended in parentheses."""

    def __init__(
        self,
        key: str,
        message: str,
        *,
        where: str | None = None,
        problems: Sequence[ConfigProblem] = (),
    ) -> None:
        self.problems = list(problems) or [ConfigProblem(key, message, where)]
        super().__init__(
            "\n".join(
                f"config {p.key}: {p.message}" + (f" (at {p.where})" if p.where else "")
                for p in self.problems
            )
        )
        self.key = self.problems[0].key

    @classmethod
    def of(cls, problems: Sequence[ConfigProblem]) -> ConfigError:
        """One error carrying several problems (at least one)."""
        first = problems[0]
        return cls(first.key, first.message, problems=problems)


class ValidationError(AccessGuardError):
    """An input record is invalid. ``reason`` is short and safe to send back to the sender."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RegistryError(AccessGuardError):
    """The registry file is invalid. ``problems`` holds every problem as ``file:line: message``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("registry invalid:\n" + "\n".join(problems))
        self.problems = problems


class RuleError(AccessGuardError):
    """The rule set is invalid; nothing may start with it. ``problems`` holds every problem as
    ``file:line: message``: fix them all, then check again with ``accessguard rules test``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("rules invalid:\n" + "\n".join(problems))
        self.problems = problems


class BrokerError(AccessGuardError):
    """The broker could not be started or reached; check ACCESSGUARD_BROKER or the Tansu binary."""


class JournalError(AccessGuardError):
    """The durable journal could not be written; free disk space or fix permissions on data_dir.

    The message is for the operator (path, cause, what to do); ``reason`` is the bare cause
    (``No space left on device``), safe to return to a sender."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or "journal not writable"


class ProviderError(AccessGuardError):
    """A call to a provider or alert sink failed."""

    def __init__(self, provider: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.status = status


class RetryableError(ProviderError):
    """Timeout, 429 or 5xx: the same call may succeed later. ``retry_after`` is in seconds."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(provider, message, status=status)
        self.retry_after = retry_after


class RateLimitedError(RetryableError):
    """The vendor refused the call for its rate limit (429, or a 403 with a reason such as
    ``userRateLimitExceeded``), or the client-side limit held it before it went out: nothing
    was done, the same call goes out once the window allows. The executor waits without
    counting it as a failed attempt. ``status`` is None when the call never left."""


class PermanentError(ProviderError):
    """A 4xx other than 429, or a request we cannot build: retrying will not help."""


class AuthError(PermanentError):
    """401/403 from a provider: rotate or re-scope its credential."""
