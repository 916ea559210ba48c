"""``accessguard hr``: sign and send HR events."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from streams.cli.wiring import config_option, error, load
from streams.support.errors import ConfigError


def _os_reason(exc: BaseException) -> str:
    """The operating system's word for a failed connection ("Connection refused", "Name or
    service not known"), dug out of the wrappers requests and urllib3 put around it."""
    todo: list[object] = [exc]
    seen: set[int] = set()
    while todo:
        err = todo.pop(0)
        if not isinstance(err, BaseException) or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError) and err.strerror:
            return err.strerror
        todo += [getattr(err, "reason", None), err.__cause__, err.__context__, *err.args]
    return "connection failed"


@click.group()
def hr() -> None:
    """Sign and send HR events (for trying accessguard out and for HR integrations)."""


@hr.command("send")
@config_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--url", help="Server base URL (default: http://http.host:http.port).")
@click.option(
    "--standard",
    is_flag=True,
    help="Sign with Standard Webhooks (hooks.standard_webhooks_secret) instead.",
)
def hr_send(config_path: str | None, file: str, url: str | None, standard: bool) -> None:
    """Sign FILE (one JSON HR event) with hr.webhook_secret (--standard: with Standard
    Webhooks and hooks.standard_webhooks_secret) and POST it to /v1/hr/events."""
    import requests  # noqa: PLC0415

    config = load(config_path)
    key = "hooks.standard_webhooks_secret" if standard else "hr.webhook_secret"
    secret = config[key]
    if not secret:
        env = "ACCESSGUARD_" + key.upper().replace(".", "_")
        raise ConfigError(key, f"set {env} to sign events")
    problem = secret.problem()
    if problem is not None:
        raise ConfigError(key, f"{secret.reference} does not resolve: {problem}")
    try:
        body = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        error(f"cannot read {file}: {exc.strerror or exc}")
    base = (url or f"http://{config['http.host']}:{config['http.port']}").rstrip("/")
    headers = {"Content-Type": "application/json"}
    headers.update(_standard(secret.reveal(), body) if standard else _stripe(secret.reveal(), body))
    endpoint = f"{base}/v1/hr/events"
    connect_s, read_s = 3.05, 15
    hint = "Check --url." if url else "Pass --url http://host:port to send elsewhere."
    try:
        resp = requests.post(endpoint, data=body, headers=headers, timeout=(connect_s, read_s))
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
    ) as exc:
        error(
            f"{endpoint} is not an http(s) URL ({exc}): pass the server's base URL, "
            "e.g. --url http://127.0.0.1:8080"
        )
    except requests.exceptions.ConnectTimeout:
        error(
            f"no connection to {endpoint} within {connect_s:g} s (a wrong host? a firewall?). "
            + hint
        )
    except requests.exceptions.Timeout:
        error(
            f"{endpoint} took the event but gave no answer within {read_s} s: whether it "
            "was accepted is unknown; sending it again is safe (events are deduplicated)"
        )
    except requests.exceptions.ConnectionError as exc:
        error(
            f"cannot reach {endpoint} ({_os_reason(exc)}): is `accessguard run` (or "
            f"`accessguard connect hr-webhook`) started there? {hint}"
        )
    except requests.RequestException as exc:
        error(f"POST {endpoint} failed: {exc}")
    click.echo(f"{resp.status_code} {resp.text}")
    sys.exit(0 if resp.status_code == 202 else 1)


def _stripe(secret: str, body: bytes) -> dict[str, str]:
    from connectors.ingest.hr_webhook import SIGNATURE_HEADER, sign  # noqa: PLC0415

    return {SIGNATURE_HEADER: sign(secret, body)}


def _standard(secret: str, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers, signed with the first key (the newest while rotating). The
    webhook-id is the event's event_id, or a digest of the file when it has none, so sending
    the same file again is the same message (the server's dedup key), never a second event."""
    import hashlib  # noqa: PLC0415

    import orjson  # noqa: PLC0415

    from connectors.ingest import standard_webhooks  # noqa: PLC0415

    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    given = data.get("event_id") if isinstance(data, dict) else None
    msg_id = given if isinstance(given, str) and given else None
    if msg_id is None:
        msg_id = "msg_" + hashlib.sha256(body).hexdigest()[:32]
    try:
        standard_webhooks.keys(secret)
    except ValueError as exc:
        raise ConfigError("hooks.standard_webhooks_secret", str(exc)) from None
    return standard_webhooks.sign(secret.split(maxsplit=1)[0], msg_id, body)
