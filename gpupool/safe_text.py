"""Untrusted text made safe for the medium it is shown in.

Names, comments, reasons and error messages come from users (and rows stored by
older versions may hold anything), so every place that shows them goes through
one of these:

- :func:`terminal`: control characters (C0, DEL, C1: ESC, CR, BEL...), line
  breaks, bidi overrides and isolates, zero-width and other invisible format
  characters, and lone surrogates become Python-style escapes (``\\x1b``,
  ``\\n``, ``\\u202e``), so what is printed is what is stored, visibly.
- :func:`rich_text`: the same, as a ``rich.text.Text``, whose markup (``[/]``,
  ``[link=...]``) and emoji codes are never parsed.
- :func:`html_text`: the same, then ``html.escape`` (quotes included).
- :func:`markdown_text`: the same, then a backslash before every character
  that makes emphasis, links, images, tables, HTML or GFM autolinks.
- :func:`plot_text`: the same, with ``$`` escaped (matplotlib mathtext) and a
  leading ``_`` kept visible (matplotlib hides such legend labels).

JSON output needs none of this: ``json.dumps`` escapes control characters, and
what a program reads back is exactly what is stored. Only the standard library
is imported here (rich only inside :func:`rich_text`).
"""

from __future__ import annotations

import html
import re
import unicodedata

# Cc: C0, DEL, C1; Cf: bidi controls, zero-width (U+200B-U+200D, U+2060, U+FEFF),
# soft hyphen, tag characters; Zl/Zp: U+2028/U+2029 line and paragraph separators;
# Cs: lone surrogates (an undecodable argv byte), which the terminal cannot encode.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _hidden(char: str) -> bool:
    return unicodedata.category(char) in _HIDDEN_CATEGORIES


def terminal(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` with every invisible or terminal-controlling character escaped.

    ``keep_newlines`` keeps ``\\n`` as a line break, for multi-line text shown as
    such (a policy document, a diff); everything else is still escaped.
    """
    text = str(text)
    if text.isprintable():  # the common case: nothing to do
        return text
    return "".join(
        _escape(c) if _hidden(c) and not (keep_newlines and c == "\n") else c for c in text
    )


def rich_text(text: object, *, keep_newlines: bool = False):
    """A ``rich.text.Text`` of :func:`terminal`'s result: rich never parses its markup."""
    from rich.text import Text

    return Text(terminal(text, keep_newlines=keep_newlines))


def html_text(text: object) -> str:
    """For HTML text and attribute values (either quote style)."""
    return html.escape(terminal(text), quote=True)


# Every character that can start emphasis, code, links, images, HTML, entities,
# headings, table cells or strikethrough, and '@' (GFM email, mailto: and xmpp:
# autolinks); GFM's other extended autolinks are broken at "://" and "www.".
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#!|~&@])")
_AUTOLINK_STARTS = re.compile(r"(?i):(?=//)|(?<=www)\.")


def markdown_text(text: object) -> str:
    """For Markdown prose, headings and table cells: renders as the literal text."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", terminal(text))
    return _AUTOLINK_STARTS.sub(lambda match: "\\" + match.group(0), escaped)


def plot_text(text: object) -> str:
    """For matplotlib titles, labels, tick labels and legend entries."""
    safe = terminal(text).replace("$", r"\$")
    return " " + safe if safe.startswith("_") else safe
