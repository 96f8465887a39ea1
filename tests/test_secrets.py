"""The one reader of secret token files (edge.config.secrets): the same rules for every token."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config.secrets import (
    MIN_TOKEN_LENGTH,
    SecretProblem,
    TokenFile,
    read_token_file,
    token_file_problem,
)

SECRET = "do-not-show-me-0123456789"


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_trailing_newline_and_surrounding_space_are_dropped(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.token", f"  {SECRET}\n")
    assert read_token_file(path) == SECRET
    assert token_file_problem(path) is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_file_others_can_read_is_refused_without_showing_the_token(
        tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "a.token", SECRET + "\n", mode)
    with pytest.raises(SecretProblem) as err:
        read_token_file(path)
    message = str(err.value)
    assert message == (f"token file {path} is readable by others (mode {mode:04o}): "
                       "chmod 600 it, owned by the service user")
    assert SECRET not in message


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.token", " \n")
    assert token_file_problem(path) == f"token file {path} is empty"


def test_a_missing_file_and_a_directory_are_refused(tmp_path: Path) -> None:
    assert token_file_problem(tmp_path / "gone.token") == (
        f"token file {tmp_path / 'gone.token'} does not exist")
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    assert token_file_problem(folder) is not None


def test_the_daemon_s_own_token_must_be_one_long_word(tmp_path: Path) -> None:
    short = _write(tmp_path / "short.token", "s3cret\n")
    assert token_file_problem(short) is None      # a partner's token has the partner's shape
    problem = token_file_problem(short, min_length=MIN_TOKEN_LENGTH)
    assert problem is not None and "one word of at least 16 characters" in problem
    spaced = _write(tmp_path / "spaced.token", "0123456789 abcdef0123\n")
    assert token_file_problem(spaced, min_length=MIN_TOKEN_LENGTH) is not None


def test_a_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.token", SECRET + "\n", 0o644)
    tokens = TokenFile(path, "test_token")
    assert tokens.get() is None
    assert tokens.problem is not None and "readable by others" in tokens.problem
    path.chmod(0o600)                                  # mending the mode is a change
    assert tokens.get() == SECRET and tokens.problem is None
    path.write_text("rotated-token-0123456789-longer\n")
    assert tokens.get() == "rotated-token-0123456789-longer"
    path.unlink()
    assert tokens.get() is None and tokens.problem == f"token file {path} does not exist"
    _write(path, SECRET)
    assert tokens.get() == SECRET
