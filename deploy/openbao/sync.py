"""Write deploy/openbao/accessguard.hcl, accessguard's own vault policy, from the code.

The policy is defined once, in :func:`connectors.custody.policy.accessguard_policy`, because
the custody tests run every vault operation with a token holding exactly that policy: the file
the vault operator loads must be the policy the tests proved sufficient, not a hand-edited
copy that drifts from it. tests/test_openbao_deploy.py fails when the file differs from what
this script writes.

    .venv/bin/python deploy/openbao/sync.py           # write
    .venv/bin/python deploy/openbao/sync.py --check   # exit 1 if stale
"""

from __future__ import annotations

import sys
from pathlib import Path

OPENBAO = Path(__file__).resolve().parent
REPO = OPENBAO.parents[1]
if str(REPO) not in sys.path:  # run as a script: make `connectors` importable
    sys.path.insert(0, str(REPO))

from connectors.custody.policy import accessguard_policy  # noqa: E402

POLICY_FILE = OPENBAO / "accessguard.hcl"


def planned() -> dict[Path, str]:
    """Every generated file and its content (the default mounts: ``secret/`` and ``totp/``)."""
    return {POLICY_FILE: accessguard_policy()}


def stale() -> list[str]:
    """Generated files that are missing or differ from what :func:`planned` gives."""
    return [
        f"{path.relative_to(REPO)}: {'differs' if path.exists() else 'missing'}"
        for path, text in planned().items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        problems = stale()
        for problem in problems:
            print(problem)
        if problems:
            print("run: .venv/bin/python deploy/openbao/sync.py", file=sys.stderr)
        return 1 if problems else 0
    for path, text in planned().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
