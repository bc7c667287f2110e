"""The Prefect UI in a real browser: the `answer` deployment's run form shows the pipeline's inputs
as typed fields, refuses a run without the required prompt, starts one with it, and the run
completes with one task run per node and the pipeline's path as an artifact.

Headless Debian Chromium (`apt-get install chromium`; `make test` installs it when root),
driven by Playwright's Python driver with `executable_path` (no browser download). Screenshots
go to $FRUGAL_SCREENSHOTS (default: the test's temporary folder); their paths are printed.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import pytest

from tests.prefect_server import chromium

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture
def browser():
    executable = chromium()
    if executable is None:
        pytest.skip("Chromium is not installed: apt-get install chromium (make test does it when run as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("FRUGAL_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_for_state(api_url: str, run_id: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = httpx.get(f"{api_url}/flow_runs/{run_id}").json()["state"]["type"]
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return state
        time.sleep(0.2)
    return state


def run_with_prompt(api_url: str, deployment_id: str, prompt: str, timeout: float = 30) -> str:
    """The flow run the form created: found by its parameters."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = httpx.post(f"{api_url}/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment_id]}}}).json()
        for run in runs:
            if run["parameters"].get("prompt") == prompt:
                return str(run["id"])
        time.sleep(0.2)
    raise AssertionError(f"no flow run with prompt {prompt!r} was created")


def submit(page, api_url: str, deployment_id: str, prompt: str, shots: Path) -> str:
    """Click Submit and return the flow run it created. A click that started nothing within 20 s (seen
    once, in a full test run: the page stayed on the form for 30 s) is clicked again, as a user would,
    after a screenshot of the page as it was; a second one that starts nothing fails the test."""
    for attempt in (1, 2):
        page.get_by_role("button", name="Submit").click()
        try:
            return run_with_prompt(api_url, deployment_id, prompt, timeout=20 if attempt == 1 else 45)
        except AssertionError:
            name = f"ui-run-form-submit-{attempt}-started-nothing.png"
            page.screenshot(path=str(shots / name))
            if attempt == 2:
                raise AssertionError(
                    f"Submit started no flow run twice; the page at {page.url} said: {page.inner_text('body')[:2000]}"
                ) from None
            print(f"the first Submit started no flow run ({shots / name}); clicking it again")
    raise AssertionError("unreachable")


def test_run_form_is_typed_and_starts_a_run(served_prefect, browser, shots):
    api = served_prefect.api_url
    deployment_id = httpx.get(f"{api}/deployments/name/answer/answer").json()["id"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{served_prefect.url}/deployments/deployment/{deployment_id}/run", wait_until="networkidle")

    # one named field per input, with its description and default
    page.get_by_text("The question or instruction to answer.").wait_for()
    labels = [label.strip() for label in page.locator("label").all_inner_texts()]
    for name in ("prompt", "system (Optional)", "max_tokens (Optional)", "temperature (Optional)", "bypass_cache (Optional)"):
        assert name in labels, labels
    assert page.get_by_text("Most tokens to generate.").is_visible()
    assert page.locator("input[type=number]").first.input_value() == "256"
    page.screenshot(path=str(shots / "ui-run-form.png"))

    # validation errors show in the form: the prompt is required
    page.get_by_role("button", name="Submit").click()
    page.get_by_text("'prompt' is a required property").wait_for()
    page.get_by_text("The question or instruction to answer.").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "ui-run-form-invalid.png"))

    question = "What is the capital of France, asked from the browser?"
    prompt = page.locator("textarea").first
    prompt.fill(question)
    assert prompt.input_value() == question
    run_id = submit(page, api, deployment_id, question, shots)
    page.wait_for_url(re.compile(rf".*/deployments/deployment/{deployment_id}(\?.*)?$"), timeout=30_000)
    assert wait_for_state(api, run_id) == "COMPLETED"

    # the run page: completed, one task run per node in the graph
    page.goto(f"{served_prefect.url}/runs/flow-run/{run_id}", wait_until="networkidle")
    page.get_by_text("Completed").first.wait_for()
    for node in ("key", "lookup", "route", "small", "small_check", "store"):
        page.get_by_text(node, exact=True).first.wait_for(timeout=15_000)
    page.screenshot(path=str(shots / "ui-flow-run.png"))

    # the run's Markdown artifact: the output, and the pipeline's diagram coloured by the path this run took
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text("took through the pipeline").first.click()
    page.wait_for_url(re.compile(r".*/artifacts/artifact/[0-9a-f-]{36}"))
    page.get_by_text("Path:").first.wait_for()
    body = page.inner_text("body")
    assert "key → lookup → route → small → small_check → store → output" in body
    assert "Output" in body and "Paris." in body  # the answer, where a Prefect user looks
    diagram = page.locator("img[src^='data:image/svg+xml']").first
    diagram.wait_for()
    assert diagram.evaluate("img => img.naturalWidth") > 100  # the SVG decoded and drew
    page.set_viewport_size({"width": 1400, "height": 1600})
    page.screenshot(path=str(shots / "ui-run-artifact.png"))
    print("screenshots:", *(str(p) for p in sorted(shots.glob("ui-*.png"))))
