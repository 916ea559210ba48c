"""Where the third-party vendor samples are, and what a test does when they are not there.

The samples live in ``../shared/vendor-samples`` beside the checkout (here and in CI) and are
never copied into the repository; a plain clone does not have them. A test that reads them
calls :func:`require` (or :func:`sample_text`): it is skipped, with the reason, when the folder
is absent, and fails as usual when the folder is there but a file or line is missing.

Set ``ACCESSGUARD_HIDE_VENDOR_SAMPLES=1`` to run as a plain clone would, with the samples
treated as absent even where they are beside the checkout. The quirks they taught are covered
without them by the fixtures in ``tests/fixtures/`` (``tests/test_fixture_*.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Set (to anything but "") to behave as a clone without ../shared.
HIDE_ENV = "ACCESSGUARD_HIDE_VENDOR_SAMPLES"
BESIDE = Path(__file__).resolve().parents[2] / "shared" / "vendor-samples"
#: Where the samples are read from; a path that never exists while HIDE_ENV is set.
SAMPLES = Path(os.devnull, "vendor-samples") if os.environ.get(HIDE_ENV) else BESIDE
ABSENT = (
    "../shared/vendor-samples is not beside this checkout (CI and the workplace have it, a "
    f"plain clone does not; {HIDE_ENV} hides it): this test reads the third-party vendor samples"
)


def present() -> bool:
    return SAMPLES.is_dir()


def require() -> Path:
    """The samples folder, or skip the calling test with the reason."""
    if not present():
        pytest.skip(ABSENT)
    return SAMPLES


def sample_text(name: str) -> str:
    """The text of one sample file (skip when the folder is absent)."""
    return (require() / name).read_text(encoding="utf-8")
