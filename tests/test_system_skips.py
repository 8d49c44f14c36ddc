"""Tests that need a system package skip with one line saying how to install it; CI turns those skips into failures."""

from __future__ import annotations

import pytest

from tests.conftest import REQUIRE_SYSTEM_ENV, need_system


def test_a_missing_system_package_skips_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_SYSTEM_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        need_system(None, "Debian's chromium not installed (apt-get install chromium)")
    need_system("/usr/bin/chromium", "unused")  # found: nothing happens


def test_ci_turns_the_skip_into_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_SYSTEM_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=f"apt-get install postgresql.*{REQUIRE_SYSTEM_ENV}=1"):
        need_system(None, "PostgreSQL server not installed (apt-get install postgresql)")
