"""The offboarding policy and read-back settings from the configuration.

The configuration package may not import the decision layer (tests/test_architecture.py), so
the typed ``offboarding.*`` and ``verify.*`` sections become their runtime objects here, and
the policy's content (action kinds per event type, provider names) is checked here too: by
``run``/``worker`` at start and by ``accessguard config check``.
"""

from __future__ import annotations

from streams.config import Config
from streams.decide.policy import OffboardingPolicy, policy_problems
from streams.runtime.executor import VerifyPolicy
from streams.support.errors import ConfigProblem


def offboarding_policy(config: Config) -> OffboardingPolicy:
    section = config.settings.offboarding
    return OffboardingPolicy.build(section.steps, section.providers)


def verify_policy(config: Config) -> VerifyPolicy:
    section = config.settings.verify
    return VerifyPolicy(
        timeout=section.timeout,
        first_interval=section.first_interval,
        max_interval=section.max_interval,
    )


def offboarding_problems(config: Config) -> list[ConfigProblem]:
    """Every problem of ``offboarding.steps`` and ``offboarding.providers``: an action kind an
    event type cannot ask for, a kind in two steps, a provider that is not configured."""
    section = config.settings.offboarding
    problems = [
        ConfigProblem(f"offboarding.{key}", reason, config.locate(f"offboarding.{key}"))
        for key, reason in policy_problems(section.steps, section.providers)
    ]
    for name in section.providers:
        if name not in config.providers:
            key = f"offboarding.providers.{name}"
            problems.append(
                ConfigProblem(key, "no provider of that name (providers.*)", config.locate(key))
            )
    return problems
