"""Documents uploaded as text (batches, policies, programme files), read as files are.

A file handed to the CLI goes through gpupool.files: a size limit per kind of
document, UTF-8 without a byte order mark. An upload arrives already decoded
(JSON text), so here only the same size limit and the mark are applied, and its
name, which errors cite as ``name:line``, is cut to a plain file name.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from gpupool.files import FileError, FileKind

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def upload_name(filename: str, default: str) -> str:
    """``../x/jobs.csv`` -> ``jobs.csv``; control characters dropped; never empty."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    return _CONTROL.sub("", name) or default


def uploaded_text(content: str, kind: FileKind, name: str) -> str:
    """The upload's text under the limit its kind of file has on the command line."""
    size = len(content.encode("utf-8", errors="surrogatepass"))
    if size > kind.max_bytes:
        raise FileError(
            f"file too large: {size:,} bytes; a {kind.noun} may have at most "
            f"{kind.max_bytes:,} bytes",
            location=name,
        )
    return content.removeprefix("\ufeff")
