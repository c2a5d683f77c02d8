"""Download the stripe-python wheels whose generated classes tests/spec reads, when missing.

Stripe publishes its OpenAPI spec per API version only up to 2020-08-27 (/work/shared/stripe-spec
and tests/spec/openapi); for every later era the SDK's classes are the published schema. Each
release below pins one API version (its `stripe/_api_version.py`); stripe-python has typed
resource classes from 7.x on, so 2023-10-16 is the oldest era they can speak for.

Run `python tests/spec/fetch_stripe_wheels.py` (the Makefile's `stripe-wheels`, which `make test`
and .ci/run use); tests/spec/test_spec_conformance.py runs it too when a wheel is missing, and
fails (never skips) when it cannot.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: stripe-python release → the API version it pins: one per era since typed classes exist.
RELEASES = {
    "7.14.0": "2023-10-16",
    "10.0.0": "2024-06-20",
    "11.0.0": "2024-09-30.acacia",
    "12.0.0": "2025-03-31.basil",
    "13.0.0": "2025-09-30.clover",
    "16.1.0": "2026-10-28.endive",
}
#: Outside git (.gitignore): wheels are downloaded, never committed.
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "stripe-wheels"


def wheel_path(release: str) -> Path | None:
    """The cached wheel of `release`, if it is there."""
    found = sorted(CACHE.glob(f"stripe-{release}-*.whl"))
    return found[0] if found else None


def fetch_missing() -> list[str]:
    """Download every release not cached yet; return the releases still missing afterwards."""
    CACHE.mkdir(parents=True, exist_ok=True)
    for release in RELEASES:
        if wheel_path(release) is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                 "--dest", str(CACHE), f"stripe=={release}"],
                check=False, timeout=300,
            )  # fmt: skip
    return [release for release in RELEASES if wheel_path(release) is None]


def main() -> int:
    missing = fetch_missing()
    if missing:
        print(f"could not download stripe=={', '.join(missing)} into {CACHE}", file=sys.stderr)
        return 1
    print(f"stripe wheels ready in {CACHE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
