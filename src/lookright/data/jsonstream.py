"""Read large JSON files record by record, in bounded memory.

The real dataset files are big (Vision-R1's cold start is a JSON list of 200k+ records;
COCO's instances file 160 MB): :func:`json.load` would hold all of it as Python objects. Here
a JSON list (at the top level, or as one member of the top-level object: COCO's
``"annotations"``) is parsed one element at a time with :meth:`json.JSONDecoder.raw_decode`
over a sliding text buffer, and a JSON Lines file one line at a time.

Errors name the file, the 1-based line and the column: a file that is not JSON at all raises
:class:`~lookright.data.validate.DataFileError`; in a JSON Lines file one malformed line
becomes a :class:`BadLine` (the reader rejects that record) unless no line is valid at all.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lookright.data.validate import DataFileError

CHUNK_CHARS = 1 << 20
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


@dataclass
class BadLine:
    """A line of a JSON Lines file that is not valid JSON (kept for the rejected table)."""

    text: str
    reason: str


def check_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path; :class:`FileNotFoundError` naming it when it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path


def _open(path: Path) -> IO[str]:
    return open(path, encoding="utf-8")  # noqa: SIM115 - closed by the callers' finally


class _Buffer:
    """A sliding window of a text file with JSON tokenising helpers."""

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path, self.handle = path, handle
        self.text, self.pos, self.eof = "", 0, False
        self.lines_before = 0  # newlines before the buffer's start
        self.columns_before = 0  # characters between the last of them and the buffer's start

    def fill(self) -> bool:
        """Append the next chunk (dropping what was consumed); False at the end of file."""
        if self.eof:
            return False
        try:
            data = self.handle.read(CHUNK_CHARS)
        except UnicodeDecodeError as err:
            raise DataFileError(f"{self.path}: not UTF-8 text ({err})") from err
        if not data:
            self.eof = True
            return False
        consumed = self.text[: self.pos]
        newline = consumed.rfind("\n")
        self.lines_before += consumed.count("\n")
        if newline >= 0:
            self.columns_before = len(consumed) - newline - 1
        else:
            self.columns_before += len(consumed)
        self.text, self.pos = self.text[self.pos :] + data, 0
        return True

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end of file), not consumed."""
        while True:
            self.pos = _WHITESPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.fill():
                return ""

    def error(self, message: str, pos: int | None = None) -> DataFileError:
        pos = self.pos if pos is None else pos
        line = self.lines_before + self.text.count("\n", 0, pos) + 1
        newline = self.text.rfind("\n", 0, pos)
        column = pos - newline if newline >= 0 else self.columns_before + pos + 1
        return DataFileError(f"{self.path}: line {line}, column {column}: {message}")

    def expect(self, char: str, what: str) -> None:
        found = self.peek()
        if found != char:
            shown = repr(found) if found else "the end of the file"
            raise self.error(f"not valid JSON (expected {what}, found {shown})")
        self.pos += 1

    def value(self) -> Any:
        """Decode the next JSON value, reading more text until it is complete."""
        self.peek()
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as err:
                if self.fill():
                    continue
                raise self.error(f"not valid JSON ({err.msg})", err.pos) from None
            if end == len(self.text) and self.fill():
                continue  # a number or literal might go on in the next chunk
            self.pos = end
            return obj

    def array_items(self) -> Iterator[Any]:
        """The elements of the JSON list starting here, one at a time."""
        self.expect("[", "'['")
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            yield self.value()
            if self.peek() == ",":
                self.pos += 1
                continue
            self.expect("]", "',' or ']'")
            return


def iter_json_array(path: str | os.PathLike[str], key: str | None = None) -> Iterator[Any]:
    """The elements of a JSON list file, or of the list at top-level member ``key``.

    Other members of the top-level object are read past element by element (never held
    whole). Raises :class:`DataFileError` when the file is empty or not of that shape, and
    :class:`FileNotFoundError` when it does not exist.
    """
    path = check_file(path)
    handle = _open(path)
    try:
        buffer = _Buffer(path, handle)
        first = buffer.peek()
        if not first:
            raise DataFileError(f"{path}: file is empty, expected JSON")
        if key is None:
            if first != "[":
                raise _not_a_list(buffer, first)
            yield from buffer.array_items()
            return
        yield from _member_items(buffer, key)
    finally:
        handle.close()


def _not_a_list(buffer: _Buffer, first: str) -> DataFileError:
    if first == "{":
        return DataFileError(f"{buffer.path}: top level is a dict, expected a JSON list of records")
    try:
        buffer.value()
    except DataFileError as err:
        return err
    return DataFileError(f"{buffer.path}: top level is not a JSON list of records")


def _member_items(buffer: _Buffer, key: str) -> Iterator[Any]:
    buffer.expect("{", "'{' (a JSON object)")
    found = False
    if buffer.peek() == "}":
        buffer.pos += 1
    else:
        while True:
            name = buffer.value()
            if not isinstance(name, str):
                raise buffer.error("not valid JSON (expected a member name)")
            buffer.expect(":", "':'")
            if buffer.peek() == "[":
                items = buffer.array_items()
                if name == key:
                    found = True
                    yield from items
                else:
                    for _ in items:
                        pass
            else:
                value = buffer.value()
                if name == key:
                    raise DataFileError(
                        f"{buffer.path}: {key!r} is a {type(value).__name__}, expected a list"
                    )
            if buffer.peek() == ",":
                buffer.pos += 1
                continue
            buffer.expect("}", "',' or '}'")
            break
    if not found:
        raise DataFileError(f"{buffer.path}: no {key!r} list in the top-level object")


def iter_json_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """``(0-based row, record | BadLine)`` of a JSON Lines file or of a JSON list file.

    Row = line of a JSON Lines file (blank lines skipped), index of a JSON list. A single
    malformed line becomes a :class:`BadLine`; a file with no valid line raises
    :class:`DataFileError` naming the first bad line (after the bad lines were yielded).
    """
    path = check_file(path)
    handle = _open(path)
    try:
        buffer = _Buffer(path, handle)
        first = buffer.peek()
        if not first:
            raise DataFileError(f"{path}: file is empty, expected JSON Lines")
        if first == "[":
            yield from enumerate(buffer.array_items())
            return
    finally:
        handle.close()
    yield from _json_lines(path)


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    first_error, n_good = None, 0
    with _open(path) as handle:
        try:
            for lineno, line in enumerate(handle):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    reason = f"line is not valid JSON ({err.msg}, column {err.colno})"
                    first_error = first_error or f"line {lineno + 1}: not valid JSON ({err.msg})"
                    yield lineno, BadLine(line.rstrip("\r\n"), reason)
                    continue
                n_good += 1
                yield lineno, record
        except UnicodeDecodeError as err:
            raise DataFileError(f"{path}: not UTF-8 text ({err})") from err
    if n_good == 0:
        raise DataFileError(f"{path}: {first_error}; no line of the file is valid JSON")


def load_json_document(path: str | os.PathLike[str]) -> Any:
    """Parse a whole (small) JSON file; errors name the file, line and column."""
    path = check_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataFileError(f"{path}: not UTF-8 text ({err})") from err
    if not text.strip():
        raise DataFileError(f"{path}: file is empty, expected JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFileError(
            f"{path}: line {err.lineno}, column {err.colno}: not valid JSON ({err.msg})"
        ) from err
