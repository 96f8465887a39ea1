"""Secret files named in the config (the operator token): read, and checked to be private.

A token that every user of the mini-PC can read is no token: the file must be readable by
the service user only (no group or other permission bits), like ssh insists for its keys.
"""

from __future__ import annotations

import stat
from pathlib import Path

# Long enough that guessing it over the LAN is hopeless (`openssl rand -hex 16` gives 32).
MIN_TOKEN_LENGTH = 16


class SecretProblem(ValueError):
    """A secret file that cannot be used, with what to do about it."""


def read_private_token(path: Path) -> str:
    """The token in `path` (one line, surrounding whitespace dropped), or SecretProblem."""
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
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise SecretProblem(f"token file {path}: the token must be one word of at least "
                            f"{MIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex 16`)")
    return token


def private_file_problem(path: Path) -> str | None:
    """What is wrong with a partner's secret file (a marketplace's token), if anything: it
    must exist, be readable by its owner only and not be empty. Its shape is the partner's."""
    try:
        mode = path.stat().st_mode
        text = path.read_bytes()
    except FileNotFoundError:
        return f"token file {path} does not exist"
    except OSError as exc:
        return f"token file {path}: {exc.strerror or exc}"
    if not stat.S_ISREG(mode):
        return f"token file {path} is not a regular file"
    if mode & 0o077:
        return (f"token file {path} is readable by others (mode {stat.S_IMODE(mode):04o}): "
                "chmod 600 it, owned by the service user")
    if not text.strip():
        return f"token file {path} is empty"
    return None


def operator_token_problem(path: Path) -> str | None:
    try:
        read_private_token(path)
    except SecretProblem as exc:
        return str(exc)
    return None


__all__ = ["MIN_TOKEN_LENGTH", "SecretProblem", "operator_token_problem", "private_file_problem",
           "read_private_token"]
