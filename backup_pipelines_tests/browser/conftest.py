"""The browser both UI modules drive."""

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from backup_pipelines_tests.support.paths import CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()
