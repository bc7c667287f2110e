"""`frugal run` makes a flow run when batches are to run on Dask: only flow runs send chunks there."""

from __future__ import annotations

from flows.cli.main import orchestrated_by_default


def test_run_is_inline_without_a_prefect_server_or_dask():
    assert orchestrated_by_default() is False


def test_run_is_a_flow_run_when_batches_run_on_dask(monkeypatch):
    monkeypatch.setenv("FRUGAL_BATCH_RUNNER", "dask")
    assert orchestrated_by_default() is True
