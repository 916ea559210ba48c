"""Where the third-party vendor samples are, and what a test does when they are not there.

The samples live in ``../shared/vendor-samples`` beside the checkout (here and in CI) and are
never copied into the repository; a plain clone does not have them. A test that reads them
calls :func:`require` (or :func:`sample_text`): it is skipped, with the reason, when the folder
is absent, and fails as usual when the folder is there but a file or line is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "vendor-samples"
ABSENT = (
    "../shared/vendor-samples is not beside this checkout (CI and the workplace have it, a "
    "plain clone does not): this test reads the third-party vendor samples"
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
