"""A file-backed secret store for shared credentials (TOTP seeds, shared passwords).

One file per reference, written atomically (temp file in the same directory, fsync,
``os.replace``) with mode 0600 inside a 0700 directory, so a crash mid-write leaves the
old value intact and no other local user can read either.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from streams.support.errors import ConfigError
from streams.support.secrets import Secret

#: Letters, digits and ``._:@+-/``; must start with a letter or digit, so neither ``..``
#: nor a hidden temp file name is ever a valid reference.
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+\-/]{0,199}$")
#: How many rotations per reference remember their idempotency key: a redelivered action
#: from days ago must still find its rotation, and rotations are rare.
KEY_HISTORY = 50
_LOCK_NAME = ".lock"


def validate_ref(ref: str) -> str:
    """Return ``ref`` if it is a safe reference, else raise ValueError (no path traversal)."""
    if not isinstance(ref, str) or not _REF_RE.match(ref):
        raise ValueError("credential reference must match [A-Za-z0-9][A-Za-z0-9._:@+-/]*")
    if any(part in ("", ".", "..") for part in ref.split("/")):
        raise ValueError("credential reference must not contain empty, '.' or '..' segments")
    return ref


class FileSecretStore:
    """Versioned secrets under ``path``; safe for the executor's threads and for several
    processes sharing the directory (an ``flock`` serialises read-modify-write)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkdir's mode is filtered by the umask and ignored for an existing directory.
            os.chmod(self.path, 0o700)
        except OSError as exc:
            raise ConfigError(
                "secret_store.path", f"cannot create or secure it: {exc.strerror}"
            ) from None
        self._lock = threading.Lock()

    def _file(self, ref: str) -> Path:
        # Percent-encoding keeps one flat directory: '/' in a ref never creates a subdir.
        return self.path / (quote(validate_ref(ref), safe="._:@+-") + ".json")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            fd = os.open(self.path / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _read(self, ref: str) -> dict[str, Any] | None:
        try:
            raw = self._file(ref).read_bytes()
        except FileNotFoundError:
            return None
        data = json.loads(raw)
        if not isinstance(data, dict):
            # Same family as json.loads' own error for a corrupt file.
            raise ValueError(f"secret file for {ref!r} is corrupt")  # noqa: TRY004
        return data

    def _write(self, ref: str, record: dict[str, Any]) -> None:
        target = self._file(ref)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.path)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(json.dumps(record).encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        # The rename itself is only durable once the directory entry is flushed.
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def put(self, ref: str, value: str, *, idempotency_key: str | None = None) -> int:
        """Store a new version of ``ref`` and return its number (1 for the first).

        With ``idempotency_key``: if a version was already stored under that key, return it
        and write nothing, so the same action run twice rotates once.
        """
        if not value:
            raise ValueError("refusing to store an empty secret")
        with self._locked():
            current = self._read(ref)
            history: list[dict[str, Any]] = list((current or {}).get("rotations", []))
            if idempotency_key is not None:
                for entry in history:
                    if entry.get("key") == idempotency_key:
                        return int(entry["version"])
            version = int((current or {}).get("version", 0)) + 1
            if idempotency_key is not None:
                history = [*history, {"key": idempotency_key, "version": version}][-KEY_HISTORY:]
            self._write(
                ref,
                {
                    "version": version,
                    "value": value,
                    "rotated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "idempotency_key": idempotency_key,
                    "rotations": history,
                },
            )
            return version

    def get(self, ref: str) -> Secret:
        """The current value as a Secret; KeyError if ``ref`` was never stored."""
        record = self._read(ref)
        if record is None:
            raise KeyError(ref)
        return Secret(str(record["value"]))

    def version(self, ref: str) -> int | None:
        """The current version number, or None if ``ref`` was never stored."""
        record = self._read(ref)
        return None if record is None else int(record["version"])

    def version_for_key(self, ref: str, idempotency_key: str) -> int | None:
        """The version a rotation with ``idempotency_key`` produced, if it happened."""
        record = self._read(ref)
        for entry in (record or {}).get("rotations", []):
            if entry.get("key") == idempotency_key:
                return int(entry["version"])
        return None

    def __repr__(self) -> str:
        return f"FileSecretStore({str(self.path)!r})"
