"""Which runner a batch's chunks go to: in process by default, Dask when FRUGAL_BATCH_RUNNER=dask
(a running scheduler's address, or a local cluster of FRUGAL_BATCH_DASK_WORKERS processes)."""

from __future__ import annotations

import pytest
from prefect_dask import DaskTaskRunner

from flows.orchestration.dask_chunks import task_runner
from tasks.core.settings import get_settings


def test_chunks_run_in_process_unless_the_settings_say_dask():
    assert get_settings().batch.runner == "inprocess"


def test_a_scheduler_address_connects_to_that_scheduler(monkeypatch):
    monkeypatch.setenv("FRUGAL_BATCH_RUNNER", "dask")
    monkeypatch.setenv("FRUGAL_BATCH_DASK_ADDRESS", "tcp://10.0.0.5:8786")
    runner = task_runner(get_settings().batch)
    assert isinstance(runner, DaskTaskRunner)
    assert runner.address == "tcp://10.0.0.5:8786" and runner.cluster_kwargs == {}


def test_no_address_starts_a_local_cluster_of_the_configured_worker_processes(monkeypatch):
    monkeypatch.setenv("FRUGAL_BATCH_RUNNER", "dask")
    monkeypatch.setenv("FRUGAL_BATCH_DASK_WORKERS", "3")
    runner = task_runner(get_settings().batch)
    assert runner.address is None
    assert runner.cluster_kwargs["n_workers"] == 3 and runner.cluster_kwargs["processes"] is True
    assert runner.cluster_kwargs["threads_per_worker"] == 2  # a worker starts a chunk while another ends


def test_an_unknown_runner_is_refused_naming_the_choices(monkeypatch):
    monkeypatch.setenv("FRUGAL_BATCH_RUNNER", "ray")
    with pytest.raises(Exception, match="inprocess.*dask"):
        get_settings()
