"""One Prefect test server for this folder (it takes seconds to start).

Package-scoped rather than session-scoped: it stops when these tests are done, so it
never runs alongside the server of tests/flows.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="package", autouse=True)
def prefect_server() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield
