"""Write files so that nothing is ever half-written.

Every writer in seedplan goes through :func:`atomic_path`: the content is
written to a temporary file in the destination folder and renamed over the
destination only when writing succeeded.  A failed run leaves any previous
file untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    Parameters
    ----------
    path : path-like
        Final destination.  Its folder is created if needed.
    suffix : str, optional
        Suffix of the temporary file (some writers pick the format from it).
        Defaults to the destination's full suffix (``.nii.gz`` stays whole).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(dest.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def read_json(path: str | os.PathLike[str], what: str, invalid: type[Exception] | None = None) -> object:
    """Read a JSON file, raising seedplan errors that name the file.

    Parameters
    ----------
    path : path-like
    what : str
        What the file is, for the message ("plan file", "case file"...).
    invalid : exception class, optional
        Raised when the text is not JSON (default :class:`~seedplan.errors.FileFormatError`).
    """
    import json

    from .errors import FileFormatError

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise FileFormatError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise (invalid or FileFormatError)(f"{p}: not a text (UTF-8 JSON) {what}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise (invalid or FileFormatError)(
            f"{p}: not valid JSON ({exc.msg} at line {exc.lineno}); the {what} is corrupt or was edited by hand"
        ) from None
