"""The real captures in tests/data/captures are verbatim copies of the project's ../shared/data."""

import pytest

from tests.conftest import SHARED_DATA, UPSTREAM_DATA


def test_vendored_captures_are_identical_to_the_shared_data():
    if not UPSTREAM_DATA.is_dir():
        pytest.skip(f"{UPSTREAM_DATA} is not next to this clone")
    files = sorted(p for p in SHARED_DATA.rglob("*") if p.is_file())
    assert len(files) >= 12
    for p in files:
        assert p.read_bytes() == (UPSTREAM_DATA / p.relative_to(SHARED_DATA)).read_bytes(), p
