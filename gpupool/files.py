"""Reading the files users hand gpupool: one safe path for every kind of input file.

Every policy document, scenario, sweep file, programme file, batch file and trace is read
here (YAML is then composed by gpupool.located_yaml), under the same rules:

- Only regular files. The path is checked with ``os.stat`` before it is
  opened, opened with ``O_NONBLOCK`` (so a FIFO can never block the open) and
  checked again with ``fstat``: a FIFO, a device such as /dev/zero, a socket or
  a directory is refused before a byte is read.
- A size limit per kind of file (``FileKind``), checked on the size the file
  reports and again while reading, so a file that keeps growing is cut off.
- UTF-8 text, with or without a byte order mark; a UTF-16 file or a bad byte
  is named with its line.
- CSV: the header's column names must be unique; a field may hold up to
  ``FIELD_LIMIT`` characters and a line ``LINE_LIMIT`` bytes; every CSV
  problem is located at ``file:line``.

A declaration read from a file (a programme, a voucher) is a
:class:`LocatedEntry`: plain values that still know the line of each field.

Every refusal is a :class:`FileError` (a GpupoolError) whose location is the
file, or ``file:line`` (plus the column) where there is one.
"""

from __future__ import annotations

import csv
import itertools
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gpupool.model import GpupoolError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True)
class FileKind:
    """A kind of input file: what to call it in errors and how large it may be."""

    noun: str
    max_bytes: int


# Hand-written documents are a few kilobytes; the limits leave room for very
# large platforms while keeping a parse (pure-Python YAML, ~0.1-0.3 MB/s on a
# busy machine) to seconds. Traces are streamed, so only disk bounds them.
POLICY = FileKind("policy document", 256 * KiB)
PROGRAMMES = FileKind("programme file", 256 * KiB)
SCENARIO = FileKind("scenario", 1 * MiB)
SWEEP = FileKind("sweep file", 256 * KiB)
BATCH_YAML = FileKind("YAML batch file", 1 * MiB)
BATCH_CSV = FileKind("CSV batch file", 4 * MiB)
TRACE = FileKind("trace", 1 * GiB)
SLURM_MAPPING = FileKind("Slurm mapping file", 64 * KiB)
SCRIPT = FileKind("job script", 256 * KiB)  # as limits.PAYLOAD_BYTES: the script is stored

FIELD_LIMIT = 1 * MiB  # characters in one CSV field (Python's default is 128 Ki)
LINE_LIMIT = 4 * MiB  # bytes in one line of a streamed CSV file

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileError(GpupoolError):
    """An input file refused by the reading rules; ``location`` is ``file[:line] [field]``."""


class LocatedEntry(dict):
    """One declaration's plain values, with ``location`` (``file:line path``, the entry's
    place) and ``where(key)`` (the place of one of its fields), for errors found after
    the YAML is gone (gpupool.accounting.declarations)."""

    location: str
    key_locations: dict[str, str]

    def where(self, key: str) -> str:
        return self.key_locations.get(key, self.location)


# ---------------------------------------------------------------------------
# Opening
# ---------------------------------------------------------------------------


def read_text(path: str | Path, kind: FileKind, source: str | None = None) -> str:
    """The whole file as text, under the rules above; ``source`` names it in errors."""
    source = str(path) if source is None else source
    fd = _open_regular(path, kind, source)
    try:
        data = _read_at_most(fd, kind, source)
    finally:
        os.close(fd)
    return decode(data, source)


def read_lines(path: str | Path, kind: FileKind, source: str | None = None) -> Iterator[str]:
    """The file's lines (ends kept), opened on the first ``next`` and decoded one at a
    time, so a large trace streams and a bad byte is named with its own line."""
    source = str(path) if source is None else source
    fd = _open_regular(path, kind, source)
    with os.fdopen(fd, "rb") as handle:
        total = 0
        for number in itertools.count(1):
            raw = handle.readline(LINE_LIMIT + 1)
            if not raw:
                return
            total += len(raw)
            if total > kind.max_bytes:
                raise _too_large(total, kind, source, growing=True)
            if len(raw) > LINE_LIMIT and not raw.endswith(b"\n"):
                raise FileError(
                    f"line longer than {LINE_LIMIT:,} bytes", location=f"{source}:{number}"
                )
            if number == 1 and raw.startswith(_UTF8_BOM):
                raw = raw[len(_UTF8_BOM) :]
            yield _decode_line(raw, source, number)


def _open_regular(path: str | Path, kind: FileKind, source: str) -> int:
    """A descriptor on a regular file no larger than ``kind`` allows."""
    try:
        _check_regular(os.stat(path).st_mode, source)
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise FileError(f"cannot read: {exc.strerror or exc}", location=source) from None
    except ValueError:  # a NUL in the path
        raise FileError("cannot read: the path holds a NUL character", location=source) from None
    try:
        info = os.fstat(fd)  # the file opened may not be the one stat saw
        _check_regular(info.st_mode, source)
        if info.st_size > kind.max_bytes:
            raise _too_large(info.st_size, kind, source)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_regular(mode: int, source: str) -> None:
    if stat.S_ISREG(mode):
        return
    what = next((name for test, name in _NOT_REGULAR if test(mode)), "not a plain file")
    raise FileError(f"cannot read: {what}, not a regular file", location=source)


def _read_at_most(fd: int, kind: FileKind, source: str) -> bytes:
    chunks, total = [], 0
    while total <= kind.max_bytes:
        chunk = os.read(fd, min(MiB, kind.max_bytes + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > kind.max_bytes:
        raise _too_large(total, kind, source, growing=True)
    return b"".join(chunks)


def _too_large(size: int, kind: FileKind, source: str, growing: bool = False) -> FileError:
    size_text = f"more than {kind.max_bytes:,}" if growing else f"{size:,}"
    return FileError(
        f"file too large: {size_text} bytes; a {kind.noun} may have at most "
        f"{kind.max_bytes:,} bytes",
        location=source,
    )


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def decode(data: bytes, source: str) -> str:
    """UTF-8 text without its byte order mark; a bad byte is named with its line."""
    if data.startswith(_UTF16_BOMS):
        raise FileError(
            "cannot read: UTF-16 text (it starts with a UTF-16 byte order mark); save it as UTF-8",
            location=source,
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _not_utf8(data[exc.start], f"{source}:{line}") from None


def _decode_line(raw: bytes, source: str, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if number == 1 and raw.startswith(_UTF16_BOMS):
            decode(raw, source)  # raises the clearer UTF-16 message
        raise _not_utf8(raw[exc.start], f"{source}:{number}") from None


def _not_utf8(byte: int, where: str) -> FileError:
    return FileError(f"cannot read: not UTF-8 text (byte 0x{byte:02x})", location=where)


# ---------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------


def csv_records(lines: Iterable[str], source: str) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) for every CSV record, the header first; ``line`` is the record's
    last physical line. A malformed record or an over-long field is a FileError there."""
    # The limit is process-wide in the csv module; every reader here sets the same value.
    csv.field_size_limit(FIELD_LIMIT)
    reader = csv.reader(lines)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise FileError(_csv_problem(exc), location=f"{source}:{reader.line_num}") from None
        yield reader.line_num, cells


def _csv_problem(exc: csv.Error) -> str:
    if str(exc).startswith("field larger than field limit"):
        return f"a field is longer than {FIELD_LIMIT:,} characters"
    return f"malformed CSV: {exc}"


def header_columns(cells: Iterable[str], source: str) -> list[str]:
    """The header's column names, stripped of spaces; a name given twice is refused."""
    columns = [cell.strip() for cell in cells]
    check_unique_columns(columns, f"{source}:1")
    return columns


def check_unique_columns(columns: Iterable[str], where: str, what: str = "column") -> None:
    """Refuse a header naming one column twice (a row would silently keep the last value)."""
    first: dict[str, int] = {}
    for number, column in enumerate(columns, start=1):
        if column in first:
            raise FileError(
                f"{what} given twice ({what}s {first[column]} and {number})",
                location=f"{where} {column}",
            )
        first[column] = number
