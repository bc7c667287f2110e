"""Batch files stay inside FRUGAL_FILE_ROOTS / FRUGAL_FILE_WRITE_ROOTS, and only regular files are read."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from tasks.core.errors import InputError
from tasks.core.files import confine, confine_folder, open_regular, read_regular, write_if_changed
from tasks.steps.sources import summary_file_name, summary_name


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    monkeypatch.setenv("FRUGAL_FILE_ROOTS", str(inbox))
    monkeypatch.setenv("FRUGAL_FILE_WRITE_ROOTS", str(out))
    return inbox, out


def test_paths_inside_the_roots_resolve_and_others_name_the_setting(roots: tuple[Path, Path], tmp_path: Path) -> None:
    inbox, out = roots
    (inbox / "a.txt").write_text("a")
    assert confine(inbox / "sub" / ".." / "a.txt", write=False, what="document") == inbox / "a.txt"
    assert confine(out / "new" / "x.md", write=True, what="summary") == out / "new" / "x.md"  # need not exist yet
    with pytest.raises(InputError, match="outside the folders batch files may be read from .*FRUGAL_FILE_ROOTS"):
        confine(tmp_path / "secret.txt", write=False, what="document")
    with pytest.raises(InputError, match="may be written to .*FRUGAL_FILE_WRITE_ROOTS"):
        confine(inbox / "a.md", write=True, what="summary")  # reading and writing roots differ
    with pytest.raises(InputError, match=r"outside"):
        confine(str(inbox) + "-other/a.txt", write=False, what="document")  # a sibling sharing the prefix


def test_a_link_that_leaves_its_root_is_refused_naming_the_link_and_its_target(roots: tuple[Path, Path], tmp_path: Path) -> None:
    inbox, _ = roots
    (tmp_path / "secret.txt").write_text("not for the model")
    (inbox / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (inbox / "folder").symlink_to(tmp_path)
    (inbox / "ok.txt").write_text("fine")
    (inbox / "alias.txt").symlink_to(inbox / "ok.txt")
    with pytest.raises(InputError) as refused:
        confine(inbox / "leak.txt", write=False, what="document")
    assert f"{inbox / 'leak.txt'} (a link to {tmp_path / 'secret.txt'})" in str(refused.value)
    with pytest.raises(InputError, match="a link to"):
        confine(inbox / "folder" / "secret.txt", write=False, what="document")
    assert confine(inbox / "alias.txt", write=False, what="document") == inbox / "ok.txt"


def test_a_file_swapped_for_a_link_is_refused_at_once_and_a_folder_within_a_second(
    roots: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Folders' resolved forms are reused for FOLDER_MEMO_SECONDS; a path's last component never is."""
    import tasks.core.files as files

    _, out = roots
    (out / "sub").mkdir(parents=True)
    (tmp_path / "secret.md").write_text("theirs")
    assert confine(out / "sub" / "a.md", write=True, what="summary") == out / "sub" / "a.md"
    (out / "sub" / "a.md").symlink_to(tmp_path / "secret.md")  # the summary's name now leads out
    with pytest.raises(InputError, match="a link to"):
        confine(out / "sub" / "a.md", write=True, what="summary")
    (out / "sub" / "a.md").unlink()
    (out / "sub").rename(out / "old")
    (out / "sub").symlink_to(tmp_path)  # the folder now leads out
    monkeypatch.setattr(files, "FOLDER_MEMO_SECONDS", 0.0)  # the second has passed
    with pytest.raises(InputError, match="outside"):
        confine(out / "sub" / "a.md", write=True, what="summary")


def test_system_folders_are_refused_even_inside_a_root(roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    inbox, _ = roots
    monkeypatch.setenv("FRUGAL_FILE_ROOTS", "/")
    (inbox / "env.txt").symlink_to("/proc/self/environ")
    (inbox / "zero.txt").symlink_to("/dev/zero")
    for path in ("/proc/self/environ", inbox / "env.txt", inbox / "zero.txt", "/sys/kernel/hostname"):
        with pytest.raises(InputError, match="system folder"):
            confine(path, write=False, what="document")


def test_roots_are_a_path_list_relative_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FRUGAL_FILE_ROOTS")  # the default: ./data
    assert confine("data/inbox/a.txt", write=True, what="summary") == tmp_path / "data" / "inbox" / "a.txt"
    with pytest.raises(InputError, match=str(tmp_path / "data")):
        confine("elsewhere/a.txt", write=False, what="document")
    monkeypatch.setenv("FRUGAL_FILE_ROOTS", os.pathsep.join(["one", str(tmp_path / "two")]))
    assert confine("two/x", write=False, what="document") == tmp_path / "two" / "x"
    assert confine("one/x", write=True, what="summary") == tmp_path / "one" / "x"  # write roots default to the read roots


def test_only_regular_files_are_opened(tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text("text")
    with open_regular(tmp_path / "doc.txt", "document doc.txt") as opened:
        assert opened.read() == b"text"
    os.mkfifo(tmp_path / "pipe.txt")  # nobody writes: opening it for reading would wait for ever
    with pytest.raises(InputError, match="document pipe.txt cannot be read: it is a FIFO"):
        with open_regular(tmp_path / "pipe.txt", "document pipe.txt"):
            pass
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "sock.txt"))
        with pytest.raises(InputError, match="it is a socket"):
            with open_regular(tmp_path / "sock.txt", "document sock.txt"):
                pass
    with pytest.raises(InputError, match="it is a character device"):
        with open_regular(Path("/dev/null"), "document null"):
            pass
    with pytest.raises(InputError, match="it is a folder"):
        with open_regular(tmp_path, "document folder"):
            pass
    (tmp_path / "link.txt").symlink_to(tmp_path / "doc.txt")
    with pytest.raises(InputError, match="it is a link"):  # callers pass resolved paths; a link swapped in is not followed
        with open_regular(tmp_path / "link.txt", "document link.txt"):
            pass


def test_a_document_is_read_whole_or_refused_by_its_size(tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_bytes(b"x" * 100)
    assert read_regular(tmp_path / "doc.txt", "document doc.txt", 100) == (100, b"x" * 100)
    assert read_regular(str(tmp_path / "doc.txt"), "document doc.txt", 99) == (100, b"")  # over the limit: not read
    os.mkfifo(tmp_path / "pipe.txt")
    with pytest.raises(InputError, match="document pipe.txt cannot be read: it is a FIFO"):
        read_regular(tmp_path / "pipe.txt", "document pipe.txt", 100)
    (tmp_path / "link.txt").symlink_to(tmp_path / "doc.txt")
    with pytest.raises(InputError, match="it is a link"):
        read_regular(tmp_path / "link.txt", "document link.txt", 100)


def test_a_folder_check_is_reused_only_while_the_roots_stay_the_same(
    roots: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out = roots
    assert confine_folder(out / "batch", write=True, what="destination") == out / "batch"
    assert confine_folder(out / "batch", write=True, what="destination") == out / "batch"
    monkeypatch.setenv("FRUGAL_FILE_WRITE_ROOTS", str(tmp_path / "elsewhere"))  # at once, not a second later
    with pytest.raises(InputError, match="FRUGAL_FILE_WRITE_ROOTS"):
        confine_folder(out / "batch", write=True, what="destination")
    with pytest.raises(InputError, match="FRUGAL_FILE_WRITE_ROOTS"):  # a refusal is never reused as a pass
        confine_folder(out / "batch", write=True, what="destination")


@pytest.mark.parametrize(
    "doc_id",
    ["a", "sub/a", "a.txt", "...", "~x", "a b", "./a", "a/./b", "a//b", "a/", "a/.", "\\a\\b", "/a", "..", "a/../b", "."],
)
def test_a_summary_file_name_is_the_one_pathlib_gives(doc_id: str) -> None:
    try:
        expected = str(summary_name(doc_id))
    except InputError:
        with pytest.raises(InputError):
            summary_file_name(doc_id)
        return
    assert summary_file_name(doc_id) == expected


def test_a_fifo_where_a_summary_goes_is_replaced_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "a.md")
    done = threading.Event()

    def write() -> None:
        write_if_changed(tmp_path / "a.md", "# a\n")
        done.set()

    threading.Thread(target=write, daemon=True).start()
    assert done.wait(30), "writing over a FIFO waited for a writer"
    assert (tmp_path / "a.md").read_text() == "# a\n"
    assert not write_if_changed(tmp_path / "a.md", "# a\n")  # already says the same: left alone
