"""Using the suite from pytest: one test per check, skips and failures mapped to pytest's.

::

    from scaivoice.conformance.protocol_suite import CHECK_NAMES, assert_check, run_protocol_suite_sync

    @pytest.fixture(scope="session")
    def protocol_report(my_server_url):
        return run_protocol_suite_sync(my_server_url, api_key=KEY)

    @pytest.mark.parametrize("name", CHECK_NAMES)
    def test_protocol_v1(protocol_report, name):
        assert_check(protocol_report, name)
"""

from __future__ import annotations

from .render import human_summary
from .report import SuiteReport

__all__ = ["assert_check", "assert_conformant"]


def assert_check(report: SuiteReport, name: str) -> None:
    """Pass, skip (``pytest.skip``) or fail (``AssertionError`` with the detail) as check
    ``name`` did in ``report``."""
    result = report.result(name)
    if result.skipped:
        import pytest

        pytest.skip(f"{name}: {result.detail}")
    if result.failed:
        raise AssertionError(f"{name} [{result.spec}] {result.title}\n{result.detail}")


def assert_conformant(report: SuiteReport) -> None:
    """Raise ``AssertionError`` with the human summary when any check failed."""
    if not report.ok:
        raise AssertionError(human_summary(report))
