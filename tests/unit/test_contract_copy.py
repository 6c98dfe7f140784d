"""docs/contract.md is the contract this repository honours, kept equal to the shared one.

The shared CONTRACT.md sits beside the checkout (``../shared/CONTRACT.md``)
where the project is developed; a clone elsewhere has only its own copy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COPY = ROOT / "docs" / "contract.md"
SHARED = ROOT.parent / "shared" / "CONTRACT.md"


def test_the_repository_carries_the_contract() -> None:
    text = COPY.read_text(encoding="utf-8")

    assert text.startswith("# ")
    for section in ("Events", "Database", "Validation"):
        assert section in text


def test_the_copy_equals_the_shared_contract() -> None:
    if not SHARED.is_file():
        pytest.skip(f"no shared contract at {SHARED} to compare with (a clone on its own)")

    assert COPY.read_bytes() == SHARED.read_bytes(), (
        f"docs/contract.md differs from {SHARED}; copy it over (cp {SHARED} docs/contract.md)"
    )
