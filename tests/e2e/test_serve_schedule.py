"""`frugal serve` runs the schedules of prefect.yaml: nightly-summaries at 02:00."""

from __future__ import annotations

import textwrap

import pytest

from flows.orchestration.serve import deployment_for, project_settings
from tasks.core.errors import ConfigError


def test_nightly_summaries_is_served_on_its_prefect_yaml_schedule():
    deployment = deployment_for("nightly-summaries")
    assert len(deployment.schedules) == 1
    schedule = deployment.schedules[0].schedule
    assert schedule.cron == "0 2 * * *"
    assert schedule.timezone == "UTC"
    assert deployment.parameters == {"source": "data/inbox", "destination": "data/summaries"}


def test_pipelines_without_a_schedule_are_served_on_demand_only():
    assert deployment_for("answer").schedules in (None, [])


def test_a_changed_schedule_is_read_from_the_file(tmp_path):
    config = tmp_path / "prefect.yaml"
    config.write_text(
        textwrap.dedent(
            """
            deployments:
              - name: nightly-summaries
                parameters: {source: /in, destination: /out}
                schedules:
                  - {cron: "30 4 * * 1-5", timezone: Europe/Paris}
            """
        )
    )
    found = project_settings("nightly-summaries", config)
    assert found["schedules"][0].cron == "30 4 * * 1-5"
    assert found["schedules"][0].timezone == "Europe/Paris"
    assert found["parameters"] == {"source": "/in", "destination": "/out"}


def test_a_broken_prefect_yaml_is_a_clear_error(tmp_path):
    config = tmp_path / "prefect.yaml"
    config.write_text("deployments: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        project_settings("x", config)
