"""Standard Webhooks (https://www.standardwebhooks.com) signatures on ``POST /v1/hr/events``.

Headers: ``webhook-id`` (the message id: the same on every retry of one message, hence the
dedup key), ``webhook-timestamp`` (unix seconds of this attempt) and ``webhook-signature``
(space-separated ``v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<raw body>")>``; several
while the sender rotates its key). The key is a ``whsec_<base64>`` secret; accessguard accepts
several, separated by spaces, while the operator rotates (:func:`keys`).

The signature bytes come from the ``standardwebhooks`` library (``Webhook.sign``: the
scheme's key decoding and signed-content layout). Its ``Webhook.verify`` is not used because
it hard-codes a five-minute window against the wall clock: the tolerance here is
``hr.tolerance_seconds``, the same as the X-AccessGuard-Signature scheme's, and the clock is
passed in (the spec's published test vectors carry fixed timestamps). The comparison is
``hmac.compare_digest`` over every key and every candidate, with no early exit, as the
library's own.

Replay: a message (id, timestamp, body) already accepted is refused 401 ("replayed")
for the tolerance window (:class:`Replays`): a sender's genuine retry is a new attempt with a
new timestamp and signature, and is answered ``duplicate`` by the id's dedup instead. Past
the window the timestamp is stale anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from connectors.ingest.edge import SignatureError

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
#: What a webhook-id may hold: the HR event_id's characters (streams/model/records.py).
_MSG_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,199}$")


def keys(value: str) -> list[Webhook]:
    """The signing keys of a configured secret: one or more ``whsec_<base64>`` (or bare
    base64) values separated by spaces. Raises ValueError naming the bad one's position."""
    out: list[Webhook] = []
    for position, part in enumerate(value.split(), start=1):
        try:
            out.append(Webhook(part))
        # binascii.Error (not base64) is a ValueError; an empty key EmptyWebhookSecretError.
        except (ValueError, RuntimeError, EmptyWebhookSecretError) as exc:
            raise ValueError(
                f"secret {position} is not a Standard Webhooks key (whsec_<base64>): "
                f"{type(exc).__name__}"
            ) from None
    if not out:
        raise ValueError("no Standard Webhooks key (whsec_<base64>)")
    return out


def sign(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three headers a sender puts on ``body`` (tests and `accessguard hr send`)."""
    ts = int(time.time()) if timestamp is None else timestamp
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body)
    return {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature}


def verify(
    signing_keys: list[Webhook],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: int,
) -> tuple[str, int]:
    """``(webhook-id, timestamp)`` of a correctly signed message, or SignatureError."""
    msg_id = (headers.get(ID_HEADER) or "").strip()
    stamp = (headers.get(TIMESTAMP_HEADER) or "").strip()
    header = headers.get(SIGNATURE_HEADER) or ""
    if not header.strip():
        raise SignatureError(f"missing {SIGNATURE_HEADER} header", "missing_signature")
    if not msg_id or not stamp:
        raise SignatureError(
            f"Standard Webhooks needs {ID_HEADER}, {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}",
            "bad_signature",
        )
    if not _MSG_ID.match(msg_id):
        # It becomes the event_id; and a non-ASCII id could not even be signed (a 500).
        raise SignatureError(
            f"{ID_HEADER}: at most 200 letters, digits and ._:@+- characters", "bad_signature"
        )
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise SignatureError(f"{TIMESTAMP_HEADER} is not unix seconds", "bad_signature")
    timestamp = int(stamp)
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            f"signature timestamp outside the {tolerance}s tolerance", "stale_signature"
        )
    # surrogateescape: aiohttp decodes header bytes that are not UTF-8 to surrogates.
    candidates = [c.encode("utf-8", "surrogateescape") for c in header.split()]
    signed_at = datetime.fromtimestamp(timestamp, UTC)
    matched = False
    for key in signing_keys:
        expected = key.sign(msg_id, signed_at, body).encode()
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("signature does not match", "bad_signature")
    return msg_id, timestamp


class Replays:
    """The signed messages (webhook-id, timestamp, body hash) accepted within the tolerance
    window: the same one again is a replay. Bounded (oldest forgotten first)."""

    def __init__(self, window: float, max_entries: int = 100_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._seen: OrderedDict[tuple[str, int, bytes], float] = OrderedDict()

    @staticmethod
    def _key(msg_id: str, timestamp: int, body: bytes) -> tuple[str, int, bytes]:
        return msg_id, timestamp, hashlib.sha256(body).digest()[:16]

    def seen(self, msg_id: str, timestamp: int, body: bytes, now: float) -> bool:
        self._expire(now)
        return self._key(msg_id, timestamp, body) in self._seen

    def add(self, msg_id: str, timestamp: int, body: bytes, now: float) -> None:
        key = self._key(msg_id, timestamp, body)
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)

    def _expire(self, now: float) -> None:
        # A pair older than twice the window has a stale timestamp whatever its skew.
        while self._seen:
            first, at = next(iter(self._seen.items()))
            if now - at <= 2 * self.window:
                break
            del self._seen[first]
