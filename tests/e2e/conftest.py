"""End-to-end tests: through a served Prefect deployment, the real bundled model, the Prefect UI in a
browser, or processes killed and restarted. Each is marked `e2e` (`-m "not e2e"` leaves them out)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
