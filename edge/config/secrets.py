"""Secret token files named in the config: read, and checked to be private, one way for all.

Every bearer token the daemon holds (the operator's, the upstream core's, a marketplace's, the
aggregator's in both directions) lives in a file the operator writes. The same rules hold for
each, at `config check` and whenever the daemon reads one:

- it is a regular file the service user can read, UTF-8 text;
- it is readable by its owner only (no group or other permission bits: `chmod 600`, owned by
  the service user), because a token that every user of the mini-PC can read is no token
  (ssh insists on the same for its keys);
- it holds the token, surrounding whitespace (the trailing newline) dropped, and is not empty;
- the daemon's own token (the operator's) is also one word of at least `MIN_TOKEN_LENGTH`
  characters; a partner's token has the partner's shape.

A problem names the file and what is wrong, never the file's content.
"""

from __future__ import annotations

import stat
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# Long enough that guessing it over the LAN is hopeless (`openssl rand -hex 16` gives 32).
MIN_TOKEN_LENGTH = 16


class SecretProblem(ValueError):
    """A secret file that cannot be used, with what to do about it."""


def read_token_file(path: Path, *, min_length: int = 1) -> str:
    """The token in `path`, or SecretProblem. `min_length` above 1 also asks for one word of
    at least that many characters (the daemon's own tokens)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise SecretProblem(f"token file {path} does not exist") from None
    except OSError as exc:
        raise SecretProblem(f"token file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SecretProblem(f"token file {path} is not UTF-8 text") from None
    if not stat.S_ISREG(mode):
        raise SecretProblem(f"token file {path} is not a regular file")
    if mode & 0o077:
        raise SecretProblem(f"token file {path} is readable by others (mode "
                            f"{stat.S_IMODE(mode):04o}): chmod 600 it, owned by the service user")
    token = text.strip()
    if not token:
        raise SecretProblem(f"token file {path} is empty")
    if min_length > 1 and (len(token) < min_length or any(c.isspace() for c in token)):
        raise SecretProblem(f"token file {path}: the token must be one word of at least "
                            f"{min_length} characters (e.g. `openssl rand -hex 16`)")
    return token


def token_file_problem(path: Path, *, min_length: int = 1) -> str | None:
    """What is wrong with a token file (see `read_token_file`), if anything."""
    try:
        read_token_file(path, min_length=min_length)
    except SecretProblem as exc:
        return str(exc)
    return None


class TokenFile:
    """A token file read again whenever it changes (the operator rotates it without a
    restart), not at every use. `name` prefixes the log events: `{name}_loaded` once a token
    is read, `{name}_unusable` once for each new problem."""

    def __init__(self, path: Path, name: str, *, min_length: int = 1) -> None:
        self.path = path
        self.name = name
        self.min_length = min_length
        self.problem: str | None = None
        self._key: tuple[int, int, int, int] | None = None
        self._token: str | None = None

    def get(self) -> str | None:
        """The token, or None (`problem` says why)."""
        try:
            st = self.path.stat()
        except OSError:
            key = None
        else:
            # chmod alone changes the mode, a rename the inode: both may mend the file.
            key = (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)
        if key is None or key != self._key:
            try:
                token = read_token_file(self.path, min_length=self.min_length)
            except SecretProblem as exc:
                self._set(None, str(exc))
            else:
                self._set(token, None)
            self._key = key
        return self._token

    def _set(self, token: str | None, problem: str | None) -> None:
        if problem is not None and problem != self.problem:
            log.error(f"{self.name}_unusable", path=str(self.path), problem=problem)
        elif token is not None and token != self._token:
            log.info(f"{self.name}_loaded", path=str(self.path))
        self._token, self.problem = token, problem


__all__ = ["MIN_TOKEN_LENGTH", "SecretProblem", "TokenFile", "read_token_file",
           "token_file_problem"]
