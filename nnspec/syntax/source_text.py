"""Spec files as text: decoded as UTF-8 with a byte order mark dropped (every reader of spec text
goes through `decode_spec` or `strip_bom`, so columns count from the first real character), and
where a file stops being UTF-8 (byte offset, line, column), so a user can find the character to
fix. Data readers use `not_utf8_message` on their error path only."""
from __future__ import annotations

import codecs
import os

from nnspec.errors import Diagnostic, NnspecError, Span

HINT = "save the file as UTF-8 (most editors: \"Save with encoding\" → UTF-8)"


def position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based (line, column in bytes) of byte `offset` of `data`."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, offset - line_start + 1


def strip_bom(text: str) -> str:
    """Text without a leading UTF-8 byte order mark (editors on Windows write one)."""
    return text[1:] if text.startswith("\ufeff") else text


def decode_spec(data: bytes, shown: str) -> str:
    """The text of a spec file (a byte order mark dropped), or NnspecError E002 located at the first
    byte that is not UTF-8."""
    try:
        return strip_bom(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        line, column = position(data, err.start)
        raise NnspecError(Diagnostic("error", "E002", f"{shown} is not UTF-8 text: byte {err.start} (line {line}, "
                                     f"column {column}) is 0x{data[err.start]:02x}",
                                     Span(shown, line, column, line, column + 1), HINT)) from None


def locate_invalid_utf8(path: str | os.PathLike, chunk: int = 1 << 20) -> tuple[int, int] | None:
    """(byte offset, line) of the first byte of a file that is not UTF-8, reading it in chunks;
    None when the whole file is UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 1
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                # err.start counts from the decoder's pending bytes (part of a character) + this block
                at = offset - (len(err.object) - len(block)) + err.start
                return at, lines + block.count(b"\n", 0, max(0, at - offset))
            if not block:
                return None
            offset += len(block)
            lines += block.count(b"\n")


def not_utf8_message(path: str | os.PathLike, shown: str) -> str:
    """"data.csv is not UTF-8 text: byte 145 (line 22) is not UTF-8", for a data file's error."""
    where = locate_invalid_utf8(path)
    return f"{shown} is not UTF-8 text" + (f": byte {where[0]} (line {where[1]}) is not UTF-8" if where else "")
