"""Values from outside (file names, sheet cells, recipe and lock strings) made safe where we
write them: one function per target (a leaf module). A value is data: it never becomes a
heading, a tag, a link, a formula or a second line of whatever holds it."""
from __future__ import annotations

import html
import re
import unicodedata

_SHOWN = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# control and format characters (ANSI escapes, bidirectional overrides, zero widths), line and
# paragraph separators, and lone surrogates (undecodable bytes of a file name)
_HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs"}
_MD_PUNCT = re.compile(r"([\\`*\[\]#|!~$])")
# `_` between two letters or digits never starts or ends emphasis (CommonMark): left as is, as in snake_case
_MD_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MD_LINE_START = re.compile(r"^(\s*)([-+=]|\d+(?=[.)]))")
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_JSON_IN_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def one_line(text: object) -> str:
    """Text as one printable line, for a console or a caption drawn into an image: every
    invisible or line-breaking character is shown as its escape (`\\n`, `\\x1b`, `\\u202e`)."""
    return "".join(c if unicodedata.category(c) not in _HIDDEN else
                   _SHOWN.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                   for c in str(text))


def markdown(text: object) -> str:
    """Text that Markdown (CommonMark, GitHub's and the Hub's) shows as written, inline, in a
    paragraph, a list item or a table cell: one line; HTML's `& < >` as entities; the
    characters that start emphasis, code, links, images, headings, cells, strikethrough and
    maths backslash-escaped; a leading list or heading marker escaped."""
    line = _MD_UNDERSCORE.sub(r"\\_", _MD_PUNCT.sub(r"\\\1", one_line(text)))
    line = "".join(_MD_ENTITIES.get(c, c) for c in line)
    return _MD_LINE_START.sub(lambda m: m.group(1) + (m.group(2) + "\\" if m.group(2)[0].isdigit()
                                                      else "\\" + m.group(2)), line, count=1)


def html_text(value: object) -> str:
    """Text that an HTML page shows as written, in an element or a quoted attribute value: one
    line (`one_line`), with `& < > " '` as character references."""
    return html.escape(one_line(value), quote=True)


def csv_cell(value: object) -> str:
    """A cell of a CSV file we write: one a spreadsheet would run as a formula (starting with
    `= + - @`, a tab or a carriage return) gets a leading `'`, which spreadsheets show as text."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_CSV_FORMULA) else text


def json_in_html(text: str) -> str:
    """JSON text (as `json.dumps` writes it) that stays inert inside an HTML page (a JSON-LD
    `<script>` block): `< > &` and the JavaScript line separators as `\\u` escapes, which
    every JSON reader decodes to the same strings."""
    return "".join(_JSON_IN_HTML.get(c, c) for c in text)
