"""Destination URLs as text (tasks/core/urls.py) and roots settings that mix folders and URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.errors import ConfigError
from tasks.core.settings import FileSettings
from tasks.core.urls import file_url_path, is_url, parse_url, shown_url


def test_urls_are_told_from_local_paths() -> None:
    assert is_url("s3://bucket/out") and is_url("memory:///x") and is_url("file:///srv/out")
    assert not is_url("data/out") and not is_url("/srv/s3://x") and not is_url("s3:/bucket") and not is_url("C:\\out")


def test_a_url_is_normalised_and_shown_without_credentials() -> None:
    url = parse_url("S3://key:secret@bucket//out/./sub/")
    assert url.protocol == "s3" and url.host == "bucket" and url.user == "key" and url.segments == ("out", "sub")
    assert url.url == "s3://key:secret@bucket/out/sub"
    assert url.shown == "s3://bucket/out/sub"
    assert url.child("a/b.md").shown == "s3://bucket/out/sub/a/b.md"
    assert shown_url("ftp://bob:pw@host/x") == "ftp://host/x"
    assert parse_url("memory:///out/a").url == "memory:///out/a"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("s3://bucket/out/../secrets", r"'\.\.'"),
        ("s3://bucket/out/%2e%2e/secrets", r"'\.\.'"),
        ("s3://bucket/out?versionId=1", "query"),
        ("s3://bucket/out#x", "fragment"),
        ("s3://bucket/out\\..\\x", "backslash"),
        ("s3://bucket/out\nx", "control"),
    ],
)
def test_traversal_and_ambiguous_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_url(url)


def test_a_url_is_within_a_root_by_whole_segments_same_protocol_host_and_user() -> None:
    root = parse_url("s3://bucket/out")
    assert parse_url("s3://bucket/out").within(root)
    assert parse_url("s3://bucket/out/a/b.md").within(root)
    assert parse_url("s3://x:y@bucket/out/a").within(root)  # a root without a user takes any
    assert not parse_url("s3://bucket/outside/a").within(root)  # a prefix of the name is not a folder
    assert not parse_url("s3://bucket/a").within(root)
    assert not parse_url("s3://other/out/a").within(root)
    assert not parse_url("gs://bucket/out/a").within(root)
    named = parse_url("abfs://container1@account/out")
    assert parse_url("abfs://container1@account/out/x").within(named)
    assert not parse_url("abfs://container2@account/out/x").within(named)


def test_file_urls_are_local_paths() -> None:
    assert file_url_path("file:///srv/out%20dir") == "/srv/out dir"
    assert file_url_path("file://localhost/srv/out") == "/srv/out"
    with pytest.raises(ValueError, match="not a host"):
        file_url_path("file://server/share")


def test_roots_keep_colons_for_folders_and_take_commas_or_json_with_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    def places(value: str) -> tuple[tuple[Path, ...], tuple[str, ...]]:
        monkeypatch.setenv("FRUGAL_FILE_WRITE_ROOTS", value)
        return FileSettings().write_places()

    assert places("/srv/a:/srv/b") == ((Path("/srv/a"), Path("/srv/b")), ())
    assert places("/srv/a, s3://bucket/out ,file:///srv/c") == ((Path("/srv/a"), Path("/srv/c")), ("s3://bucket/out",))
    assert places('["/srv/a,b:c", "memory://x"]') == ((Path("/srv/a,b:c"),), ("memory://x",))
    with pytest.raises(ConfigError, match="separate URL roots .* with ','"):
        places("/srv/a:s3://bucket/out")
    with pytest.raises(ConfigError, match="JSON list"):
        places('["/srv/a", 3]')
    with pytest.raises(ConfigError, match="not a host"):
        places("file://server/share,s3://b")


def test_an_unset_write_roots_takes_the_read_roots_urls_included(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRUGAL_FILE_ROOTS", "data,s3://bucket/out")
    monkeypatch.delenv("FRUGAL_FILE_WRITE_ROOTS", raising=False)
    settings = FileSettings()
    assert settings.read_folders() == (Path("data"),)
    assert settings.write_folders() == (Path("data"),) and settings.write_urls() == ("s3://bucket/out",)
