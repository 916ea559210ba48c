"""Helpers shared by the login-event normalisers (Okta, Entra, Google, generic).

Vendor payloads are untrusted JSON: every accessor here checks the type it reads and turns
missing, null, placeholder or broken values into ``None`` (optional fields) or a
:class:`~streams.support.errors.ValidationError` with a reason (fields an event cannot do without).
Nothing here raises anything else on decoded JSON input.

Placeholders seen in vendor samples and documentation: ``"redacted"``, the string ``"null"``,
``"unknown"``, ``"<IP ADDRESS>"``-style angle-bracket tokens, ``"{yourOktaDomain}"``-style brace
tokens, and Okta's ``"City"``/``"State"``/``"Country"`` literals with lat/lon 0,0.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from streams.model.records import Geo
from streams.support.errors import ValidationError

#: Lower-cased values that mean "no value" wherever a vendor puts them.
PLACEHOLDERS: frozenset[str] = frozenset(
    {
        "",
        "-",
        "n/a",  # not "na": that is Namibia's country code
        "none",
        "nil",
        "null",
        "undefined",
        "unknown",
        "redacted",
        "<redacted>",
        "[redacted]",
    }
)
#: Okta's documentation geo literals (with lat/lon 0,0); never a real place name.
_GEO_PLACEHOLDERS: frozenset[str] = frozenset({"city", "state", "country", "postalcode"})
_PLACEHOLDER_TOKEN_RE = re.compile(r"^<[^<>]*>$|\{[A-Za-z_][A-Za-z0-9_]*\}")

_EMPTY: dict[str, Any] = {}


def obj(data: Any, key: str) -> dict[str, Any]:
    """``data[key]`` when both are JSON objects, else an empty (shared, read-only) dict."""
    if isinstance(data, dict):
        value = data.get(key)
        if isinstance(value, dict):
            return value
    return _EMPTY


def items(data: Any, key: str) -> list[Any]:
    """``data[key]`` when it is a JSON array, else an empty list."""
    if isinstance(data, dict):
        value = data.get(key)
        if isinstance(value, list):
            return value
    return []


def is_placeholder(value: str) -> bool:
    """True for a string that stands for "no value" (``redacted``, ``<USER ID>``, ...)."""
    text = value.strip()
    if len(text) <= 12 and text.lower() in PLACEHOLDERS:
        return True
    if "<" not in text and "{" not in text:
        return False
    return _PLACEHOLDER_TOKEN_RE.search(text) is not None


def _clean_text(value: str) -> str | None:
    if not value or is_placeholder(value):
        return None
    if value.isprintable() and value[0] != " " and value[-1] != " " and "  " not in value:
        return value  # the common case: nothing to clean
    cleaned = " ".join(value.split())
    return cleaned or None


_clean_text_cached = lru_cache(maxsize=8192)(_clean_text)


def text(data: Any, key: str, *, max_len: int = 512) -> str | None:
    """A clean optional string field: stripped, whitespace runs (NBSP included) collapsed,
    ``None`` when absent, not a string, or a placeholder; cut to ``max_len`` characters.
    Numbers become strings (Google sends ids as JSON numbers or strings)."""
    if not isinstance(data, dict):
        return None
    value = data.get(key)
    if not isinstance(value, str):
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        else:
            return None
    # Principals, user agents, reasons and place names repeat across a stream: short values
    # go through a bounded cache (at most ~8k entries of <= 512 characters).
    cleaned = _clean_text_cached(value) if len(value) <= 512 else _clean_text(value[:4096])
    if cleaned is None:
        return None
    return cleaned[:max_len] if len(cleaned) > max_len else cleaned


# ------------------------------------------------------------------------------ timestamps

_TS_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,12}))?)?"
    r"\s*(?:([Zz])|([+-])(\d{2}):?(\d{2}))?"
)


def parse_timestamp(value: Any, field: str, *, assume_utc: bool = False) -> datetime:
    """Parse an ISO-8601/RFC 3339 timestamp into an aware UTC datetime.

    Accepts any number of fractional digits (Okta sends 2, 3 and 9, Entra 7 and 9; digits past
    microseconds are truncated), ``Z`` or ``±hh:mm`` offsets. A timestamp without a zone is
    rejected unless ``assume_utc`` (only where the vendor documents UTC). Raises
    ValidationError naming ``field`` for a missing, placeholder or impossible value (such as
    ``2017-09-31``).
    """
    if value is None:
        raise ValidationError(f"{field}: missing")
    if not isinstance(value, str):
        raise ValidationError(f"{field}: expected a timestamp string")
    raw = value.strip()
    try:
        # Python 3.11's parser is C code and takes every form above; the regex below only
        # words the reason when it refuses.
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        if is_placeholder(raw):
            raise ValidationError(f"{field}: placeholder {raw[:40]!r}, no usable time") from None
        if _TS_RE.fullmatch(raw) is None:
            raise ValidationError(f"{field}: not an ISO-8601 timestamp: {raw[:40]!r}") from None
        raise ValidationError(f"{field}: impossible date or time: {raw[:40]!r}") from None
    if parsed.tzinfo is None:
        if not assume_utc:
            raise ValidationError(f"{field}: timestamp needs a zone (Z or +hh:mm): {raw[:40]!r}")
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC (was a 500)
        raise ValidationError(f"{field}: out of range: {raw[:40]!r}") from None


def parse_epoch_micros(value: Any, field: str) -> datetime:
    """Unix microseconds (Google's ``login_timestamp``; an int, or a string of digits as the
    Reports API serialises int64) as an aware UTC datetime."""
    if isinstance(value, str) and value.strip().isdigit():
        try:
            value = int(value.strip())
        except ValueError:  # "²" is a digit to isdigit(), not to int(); so are 5000 digits
            raise ValidationError(f"{field}: expected unix microseconds") from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(f"{field}: expected unix microseconds")
    try:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)
    except OverflowError:
        raise ValidationError(f"{field}: out of range") from None


# ------------------------------------------------------------------------------ network


@lru_cache(maxsize=16384)
def _clean_ip_text(raw: str) -> str | None:
    candidate = raw.strip()
    if is_placeholder(candidate):
        return None
    if candidate.startswith("[") and "]" in candidate:  # "[2001:db8::1]:443"
        candidate = candidate[1 : candidate.index("]")]
    try:
        return ipaddress.ip_address(candidate).compressed
    except ValueError:
        return None


def clean_ip(value: Any) -> str | None:
    """A valid IPv4/IPv6 address in canonical form, or None for anything else (missing,
    ``"null"``, ``"redacted"``, ``"<IP ADDRESS>"``, garbage). Private and loopback addresses
    are kept: they are what the vendor saw (see :func:`ip_is_internal`)."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    return _clean_ip_text(value)


def ip_is_internal(ip: str) -> bool:
    """True for private, loopback, link-local or otherwise non-global addresses: geo and
    "new IP" facts about them say little (a proxy or the vendor's own network)."""
    return len(ip) <= 64 and _ip_is_internal(ip)


@lru_cache(maxsize=16384)
def _ip_is_internal(ip: str) -> bool:
    try:
        return not ipaddress.ip_address(ip).is_global
    except ValueError:
        return False


def _coord(value: Any, limit: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number) or not -limit <= number <= limit:
        return None
    return number


@lru_cache(maxsize=8192)
def _geo_name(value: str) -> str | None:
    cleaned = " ".join(value.split())
    if not cleaned or is_placeholder(cleaned) or cleaned.lower() in _GEO_PLACEHOLDERS:
        return None
    return cleaned[:128]


@lru_cache(maxsize=16384)
def _make_geo(
    country: str | None, city: str | None, lat: float | None, lon: float | None
) -> Geo | None:
    # Cached on hashable, already type-checked inputs: Geo is frozen, so events share it.
    if lat is None or lon is None or (lat == 0.0 and lon == 0.0):
        lat = lon = None
    country_s = _geo_name(country) if country is not None else None
    city_s = _geo_name(city) if city is not None else None
    if country_s is None and city_s is None and lat is None:
        return None
    return Geo(country=country_s, city=city_s, lat=lat, lon=lon)


def make_geo(country: Any, city: Any, lat: Any, lon: Any) -> Geo | None:
    """A Geo from vendor values with placeholders dropped: ``"City"``/``"Country"`` literals,
    empty strings, ``"Unknown"``, and a 0,0 position (the vendors' "no location"). Country is
    kept as the vendor gave it (Okta: a name such as "United States"; Entra: "US" or a name).
    None when nothing usable is left."""
    return _make_geo(
        country[:256] if isinstance(country, str) else None,
        city[:256] if isinstance(city, str) else None,
        _coord(lat, 90.0),
        _coord(lon, 180.0),
    )


# ------------------------------------------------------------------------------ MFA and risk

#: Keyword -> canonical method, tried in order (so "Email OTP" is email, not totp).
_MFA_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("push", "push"),
    ("notification", "push"),
    ("google_prompt", "push"),
    ("prompt", "push"),
    ("webauthn", "webauthn"),
    ("fido", "webauthn"),
    ("u2f", "webauthn"),
    ("security_key", "webauthn"),
    ("security key", "webauthn"),
    ("passkey", "webauthn"),
    ("windows hello", "webauthn"),
    ("signed_nonce", "webauthn"),  # Okta FastPass: a device-bound key, phishing-resistant
    ("sms", "sms"),
    ("text message", "sms"),
    ("phone", "sms"),  # Google idv_preregistered_phone; "phone call" is matched before
    ("email", "email"),
    ("totp", "totp"),
    ("otp", "totp"),
    ("oath", "totp"),
    ("authenticator", "totp"),
    ("verification code", "totp"),
    ("token:software", "totp"),
    ("token:hardware", "totp"),
    ("soft_token", "totp"),
    ("password", "password"),
)
_MFA_IGNORED: frozenset[str] = frozenset({"previously satisfied", "none", "unknown"})


def mfa_method(value: str) -> str | None:
    """Map a vendor's factor or authentication-method name to the canonical method:
    push | totp | sms | webauthn | email | password | other. None for no method ("Previously
    satisfied", placeholders)."""
    return _mfa_method(value[:64])


@lru_cache(maxsize=1024)
def _mfa_method(value: str) -> str | None:
    lowered = " ".join(value.lower().split())
    if not lowered or lowered in _MFA_IGNORED or is_placeholder(lowered):
        return None
    if any(word in lowered for word in ("phone call", "voice", "call")):
        return "other"
    for keyword, method in _MFA_KEYWORDS:
        if keyword in lowered:
            return method
    # Backup codes, security questions, Okta Verify without a mode, Duo, RADIUS, certificates:
    # a real method that has no canonical name.
    return "other"


def strongest_method(methods: list[str]) -> str | None:
    """The second factor among canonical methods (the last non-password one), else
    ``password`` when that is all there was."""
    chosen: str | None = None
    for method in methods:
        if method != "password":
            chosen = method
    if chosen is None and "password" in methods:
        return "password"
    return chosen


_RISK_LEVELS: frozenset[str] = frozenset({"low", "medium", "high"})


def risk_level(value: Any) -> str | None:
    """low | medium | high, or None for "none", "hidden", placeholders and anything else."""
    if not isinstance(value, str):
        return None
    lowered = value.strip().lower()
    return lowered if lowered in _RISK_LEVELS else None


# ------------------------------------------------------------------------------ identity


def canonical_bytes(payload: Any) -> bytes:
    """Payload bytes independent of key order, for hashing (the same event re-serialised by
    another hop hashes the same)."""
    try:
        return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        raise ValidationError("payload is not JSON-serialisable") from None


def make_event_id(vendor: str, vendor_id: str | None, digest: str, index: int = 0) -> str:
    """``vendor:vendor_id:hash`` — unique per event even where vendor ids repeat (Okta reuses
    ``uuid``; a Google activity holds several events), stable across redeliveries of the same
    payload, so downstream dedup and idempotency keys stay correct. ``digest`` is
    :func:`payload_digest` of the whole payload; ``index`` tells apart events of one payload."""
    vid = (vendor_id or "-")[:100]
    suffix = f"#{index}" if index else ""
    return f"{vendor}:{vid}{suffix}:{digest}"


def payload_digest(payload: Any) -> str:
    """The first 12 hex digits of the SHA-256 of :func:`canonical_bytes`."""
    return hashlib.sha256(canonical_bytes(payload)).hexdigest()[:12]


def require_object(payload: Any, what: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ValidationError(f"{what} must be a JSON object")
    return payload
