"""A local server that answers like Have I Been Pwned API v3, for the HIBP feed.

Behaves as documented (https://haveibeenpwned.com/API/v3), not as a mock that accepts
anything:

* every authorised endpoint checks ``hibp-api-key``: missing or wrong -> 401 with HIBP's
  plain-text reason ("Access denied due to ... hibp-api-key.");
* a missing or non-descriptive ``user-agent`` (empty, ``python-requests/...``) -> 403;
* ``GET /api/v3/breaches`` -> the whole catalogue (no key needed, like HIBP);
* ``GET /api/v3/breacheddomain/{domain}`` -> ``{alias: [names]}``; a domain the key has not
  verified -> 403; a verified domain without breached addresses -> 404;
* ``GET /api/v3/breachedaccount/{account}`` -> breach objects (``truncateResponse=false``)
  or ``[{"Name": ...}]`` (truncated, the default); 404 when the account is not pwned;
* :meth:`FakeHibp.fail_next` injects 429 (with ``retry-after``) or 5xx answers.

Large domains come back whole, as HIBP sends them (the endpoint is not paged).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from tests.fake_logs import FakeClock, Reply, _LogServer

API_KEY = "hibp-test-key"
PREFIX = "/api/v3"


def breach_object(
    name: str,
    *,
    breach_date: str = "2024-05-01",
    added: str = "2024-06-01T10:00:00Z",
    classes: tuple[str, ...] = ("Email addresses", "Passwords"),
    **flags: bool,
) -> dict[str, Any]:
    """A breach object in the newer schema (Attribution, DisclosureUrl)."""
    obj: dict[str, Any] = {
        "Name": name,
        "Title": name,
        "Domain": f"{name.lower()}.example",
        "BreachDate": breach_date,
        "AddedDate": added,
        "ModifiedDate": added,
        "PwnCount": 1000,
        "Description": f"In 2024, {name} was breached.",
        "LogoPath": f"https://logos.haveibeenpwned.com/{name}.png",
        "Attribution": None,
        "DisclosureUrl": None,
        "DataClasses": list(classes),
        "IsVerified": True,
        "IsFabricated": False,
        "IsSensitive": False,
        "IsRetired": False,
        "IsSpamList": False,
        "IsMalware": False,
        "IsSubscriptionFree": False,
        "IsStealerLog": False,
    }
    for key, value in flags.items():
        obj[key] = value
    return obj


class FakeHibp(_LogServer):
    """See the module docstring. ``catalogue`` maps Name -> breach object; ``domains`` maps a
    verified domain -> {alias: [names]}; ``accounts`` maps an account -> [names]."""

    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.catalogue: dict[str, dict[str, Any]] = {}
        self.domains: dict[str, dict[str, list[str]]] = {}
        self.accounts: dict[str, list[str]] = {}
        super().__init__(FakeClock())
        self.base_url = self.url + PREFIX

    def add_breach(self, obj: dict[str, Any]) -> None:
        with self.lock:
            self.catalogue[obj["Name"]] = obj

    def _fault_body(self, status: int) -> Any:
        return {"statusCode": status, "message": "Rate limit is exceeded."}

    def _handle(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Reply:
        agent = headers.get("user-agent", "")
        if not agent.strip() or agent.startswith("python-requests"):
            return Reply(403)
        if not path.startswith(PREFIX + "/"):
            return Reply(404)
        service, _, param = path[len(PREFIX) + 1 :].partition("/")
        param = unquote(param)
        if service != "breaches":
            key = headers.get("hibp-api-key")
            if not key:
                return Reply(401, "Access denied due to missing hibp-api-key.")
            if key != self.api_key:
                return Reply(401, "Access denied due to invalid hibp-api-key.")
        fault = self._take_fault()
        if fault is not None:
            return fault
        with self.lock:
            if service == "breaches" and not param:
                return Reply(200, list(self.catalogue.values()))
            if service == "breacheddomain" and param:
                found = self.domains.get(param.lower())
                if found is None:
                    return Reply(403, "Domain not verified for this subscription.")
                return Reply(200, found) if found else Reply(404)
            if service == "breachedaccount" and param:
                names = self.accounts.get(param.lower())
                if not names:
                    return Reply(404)
                if query.get("truncateResponse", "true").lower() == "false":
                    return Reply(200, [self.catalogue[n] for n in names])
                return Reply(200, [{"Name": n} for n in names])
        return Reply(404)
