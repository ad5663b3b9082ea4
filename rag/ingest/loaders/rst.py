"""reStructuredText (.rst, and the .txt sources Sphinx publishes under ``_sources``).

Sections split at titles (underlined, or over- and underlined), which build the heading
path. Markup is reduced to its text, in the chunker's convention (``rag.ingest.chunker``):

* roles to their text: ``:keyword:`with``` is ``with``, ``:ref:`Title <target>``` is
  ``Title``, ``:func:`~os.path.join``` is ``join``; ````literal```` is ```literal```;
  hyperlink references (```text <url>`_``) are their text; footnote references go;
* admonitions to a paragraph: ``.. note::`` and its body is ``Note: body``; version
  notes read "New in version 3.2: ...";
* code (``.. code-block:: python``, ``.. code::``, ``.. sourcecode::``, ``.. doctest::``,
  and the indented block after a paragraph ending in ``::``) to a fenced block that
  keeps its indentation;
* object descriptions (``.. function:: name(args)`` and the like) to the signature
  with its description indented under it, like a definition list;
* field lists (``:param x: text``) to ``param x: text`` lines;
* comments, targets, substitution definitions and directives without readable text
  (``toctree``, ``index``, ``highlight``, ``image``, ``raw``...) go.

A plain-text file is read as rST when Sphinx published it (a ``_sources`` folder, or a
name ending ``.rst.txt``), or when it has a title underline and at least two directives
or roles.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from rag.domain import LoadedDocument
from rag.ingest.loaders.outline import outlined
from rag.ingest.loaders.text import decode_text

_ADORNMENT = re.compile(r"([!-/:-@\[-`{-~])\1{2,}\s*")
_DIRECTIVE = re.compile(r"(\s*)\.\.\s+([\w:.-]+)::(?:\s+(.*))?$")
_EXPLICIT = re.compile(r"(\s*)\.\.(?:\s|$)")
_FIELD = re.compile(r"(\s*):([^:`\s][^:`]*):(?:\s+(.*))?$")
_ROLE = re.compile(r":(?:[\w.+-]+:)*[\w.+-]+:`((?:[^`\\]|\\.)+)`")
_ROLE_AFTER = re.compile(r"`((?:[^`\\]|\\.)+)`:[\w.+-]+:")
_LITERAL = re.compile(r"``(.+?)``")
_REFERENCE = re.compile(r"`([^`<]+?)\s*<[^`>]*>`__?|`([^`]+)`__?")
_INTERPRETED = re.compile(r"(?<![`\w])`([^`]+)`(?![`\w])")
_FOOTNOTE_REF = re.compile(r"\s?\[(?:#\w*|\*|\d+)\]_")
_TITLE_ROLE = re.compile(r"(.*?)\s*<[^<>]*>$", re.DOTALL)

_ADMONITIONS = {
    "note": "Note",
    "warning": "Warning",
    "tip": "Tip",
    "hint": "Hint",
    "important": "Important",
    "caution": "Caution",
    "attention": "Attention",
    "danger": "Danger",
    "error": "Error",
    "seealso": "See also",
    "todo": "To do",
}
_VERSIONS = {
    "versionadded": "New in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
    "versionremoved": "Removed in version",
}
_CODE = frozenset({"code-block", "code", "sourcecode", "doctest", "testcode", "testoutput"})
_SKIP = frozenset(
    {
        "toctree", "index", "highlight", "image", "raw", "include", "literalinclude",
        "meta", "tabularcolumns", "contents", "sectionauthor", "moduleauthor",
        "codeauthor", "currentmodule", "module", "default-role", "default-domain",
        "role", "sectnum", "header", "footer", "title", "cssclass", "rst-class",
        "autosummary", "automodule", "autoclass", "autofunction", "testsetup",
        "testcleanup", "spelling:word-list", "glossary-only", "centered",
    }
)  # fmt: skip
# Directives whose body is plain content under an optional title line.
_CONTAINERS = frozenset(
    {
        "only", "container", "rubric", "topic", "sidebar", "compound", "glossary",
        "figure", "table", "list-table", "csv-table", "hlist", "admonition", "epigraph",
        "highlights", "pull-quote", "productionlist", "tab", "tabs", "card",
    }
)  # fmt: skip
# Containers whose argument is a condition, a class or a file, not a title.
_UNTITLED = frozenset({"only", "container", "figure", "hlist", "compound", "tabs"})
_SOURCES_SIGNS = (_DIRECTIVE, _ROLE)

_Line = str | tuple[int, str]
"""A converted line of text, or a section title as (level, title)."""


def looks_like_rst(path: Path, text: str) -> bool:
    """True for a Sphinx ``_sources`` file or a .txt that is rST by its markup."""
    if "_sources" in path.parts or path.name.lower().endswith(".rst.txt"):
        return True
    lines = text.splitlines()
    titled = any(
        _ADORNMENT.fullmatch(line) and lines[i - 1].strip() and len(line.rstrip()) >= 3
        for i, line in enumerate(lines[1:200], 1)
    )
    signs = sum(1 for line in lines[:2000] for pattern in _SOURCES_SIGNS if pattern.search(line))
    return titled and signs >= 2


def inline(text: str) -> str:
    """Inline markup reduced to its text."""
    text = _ROLE.sub(lambda m: _role_text(m.group(1)), text)
    text = _ROLE_AFTER.sub(lambda m: _role_text(m.group(1)), text)
    text = _REFERENCE.sub(lambda m: m.group(1) or m.group(2), text)
    # Single backquotes first: the literal's double ones become single ones after.
    text = _INTERPRETED.sub(lambda m: m.group(1), text)
    text = _LITERAL.sub(lambda m: f"`{m.group(1)}`", text)
    return _FOOTNOTE_REF.sub("", text)


def _role_text(body: str) -> str:
    body = body.replace("\\", "")
    titled = _TITLE_ROLE.fullmatch(body)
    if titled and titled.group(1):
        return titled.group(1)
    body = body.lstrip("!")
    if body.startswith("~"):
        return body[1:].rsplit(".", 1)[-1]
    return body


def _block(lines: list[str], start: int, indent: int) -> int:
    """Index after the lines from ``start`` that are blank or indented deeper than ``indent``."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1  # trailing blank lines belong to what follows
    return end


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _dedented(lines: list[str]) -> list[str]:
    return textwrap.dedent("\n".join(lines)).split("\n") if lines else []


def _fenced(body: list[str], indent: str, language: str = "") -> list[_Line]:
    code = _dedented(body)
    while code and not code[0].strip():
        code.pop(0)
    return ["", f"{indent}```{language}", *(indent + line for line in code), f"{indent}```", ""]


class _Converter:
    def __init__(self) -> None:
        self.levels: list[str] = []
        """Adornment styles in the order met: a style's index is its title level."""

    def convert(self, lines: list[str]) -> list[_Line]:
        """Lines of text, and (level, title) for every section title."""
        out: list[_Line] = []
        i = 0
        literal_next = False
        while i < len(lines):
            line = lines[i]
            title = self._title(lines, i)
            if title is not None:
                level, text, used = title
                out.append((level, inline(text)))
                i += used
                continue
            indent = _indent(line)
            if literal_next and line.strip() and indent > self._para_indent(lines, i):
                end = _block(lines, i, self._para_indent(lines, i))
                out.extend(_fenced(lines[i:end], " " * self._para_indent(lines, i)))
                i, literal_next = end, False
                continue
            if line.strip():
                literal_next = False
            directive = _DIRECTIVE.match(line)
            if directive:
                end = _block(lines, i + 1, indent)
                out.extend(self._directive(directive, lines[i + 1 : end]))
                i = end
                continue
            if _EXPLICIT.match(line):
                # A comment, a target, a substitution or footnote definition: a comment's
                # text and a target are not content; a footnote keeps its text.
                end = _block(lines, i + 1, indent)
                footnote = re.match(r"\s*\.\.\s+\[[^\]]+\]\s+(.*)", line)
                if footnote:
                    out.append(" " * indent + inline(footnote.group(1)))
                    out.extend(" " * indent + inline(x.strip()) for x in lines[i + 1 : end])
                i = end
                continue
            field = _FIELD.match(line)
            if field:
                body = field.group(3) or ""
                out.append(f"{field.group(1)}{inline(field.group(2))}: {inline(body)}".rstrip())
                i += 1
                continue
            if line.rstrip().endswith("::") and not _ADORNMENT.fullmatch(line):
                literal_next = True
                stem = line.rstrip()[:-2]
                line = (
                    stem.rstrip() if stem.endswith((" ", "\t")) or not stem.strip() else stem + ":"
                )
            # A role or reference may wrap onto the next lines: read them together.
            end = i + 1
            while line.count("`") % 2 and end < min(len(lines), i + 4) and lines[end].strip():
                line += "\n" + lines[end]
                end += 1
            out.extend(inline(line).split("\n"))
            i = end
        return out

    def _para_indent(self, lines: list[str], i: int) -> int:
        """Indentation of the paragraph before line ``i`` (the one that ended in ``::``)."""
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        return _indent(lines[j]) if j >= 0 else 0

    def _title(self, lines: list[str], i: int) -> tuple[int, str, int] | None:
        """(level, text, lines used) when a section title starts at line ``i``."""
        line = lines[i]
        below = lines[i + 1] if i + 1 < len(lines) else ""
        if _ADORNMENT.fullmatch(line) and i + 2 < len(lines):
            text, under = lines[i + 1], lines[i + 2]
            if text.strip() and under.rstrip() == line.rstrip() and not _ADORNMENT.fullmatch(text):
                return self._level("over" + line.strip()[0]), text.strip(), 3
        if (
            line.strip()
            and not line[0].isspace()
            and not _ADORNMENT.fullmatch(line)
            and _ADORNMENT.fullmatch(below)
            and len(below.rstrip()) >= min(len(line.rstrip()), 3)
        ):
            return self._level(below.strip()[0]), line.strip(), 2
        return None

    def _level(self, style: str) -> int:
        if style not in self.levels:
            self.levels.append(style)
        return self.levels.index(style) + 1

    def _directive(self, match: re.Match[str], body: list[str]) -> list[_Line]:
        indent, name, argument = match.group(1), match.group(2).lower(), match.group(3) or ""
        # Options (":linenos:", ":caption: x") open a directive's body.
        start = 0
        while start < len(body) and _FIELD.match(body[start]):
            start += 1
        content = _dedented(body[start:])
        short = name.rsplit(":", 1)[-1]
        if short in _CODE:
            return _fenced(body[start:], indent, argument.split()[0] if argument else "")
        if short in _SKIP:
            return []
        converted = [indent + x if isinstance(x, str) and x else x for x in self.convert(content)]
        label = _ADMONITIONS.get(short)
        if short in _VERSIONS:
            label = f"{_VERSIONS[short]} {argument.strip()}".strip()
            argument = ""
        elif short == "admonition":
            label, argument = inline(argument), ""
        if label is not None:
            lead = f"{label}: {inline(argument)}".rstrip() if argument else f"{label}:"
            return ["", *_lead_into(indent + lead, converted), ""]
        if short in _CONTAINERS or not argument:
            head = [indent + inline(argument)] if argument and short not in _UNTITLED else []
            return ["", *head, *converted, ""]
        # An object description: the signature, its description indented under it.
        nested = [("    " + x) if isinstance(x, str) and x else x for x in converted]
        while nested and nested[0] == "":
            nested.pop(0)  # the description starts right under its signature
        return ["", indent + inline(argument), *nested, ""]


def _lead_into(lead: str, body: list[_Line]) -> list[_Line]:
    """``Note:`` joined to the first line of its body, so the two stay one paragraph."""
    for n, line in enumerate(body):
        if isinstance(line, str) and line.strip():
            if line.lstrip().startswith(("```", "- ", "* ")):
                break
            return [*body[:n], f"{lead} {line.strip()}", *body[n + 1 :]]
        if isinstance(line, str) and not line.strip():
            continue
        break
    else:
        return [lead.removesuffix(":") + "."]  # "New in version 3.2." with nothing after
    return [lead, *body]


def load_rst(path: Path, data: bytes) -> LoadedDocument:
    """Sections split at titles; the document title is the first title, else the stem."""
    raw = decode_text(data, path.suffix.lower()).replace("\r\n", "\n").replace("\r", "\n")
    return rst_document(path, raw)


def rst_document(path: Path, raw: str) -> LoadedDocument:
    """The document ``raw`` rST text makes."""
    return outlined(path, _Converter().convert(raw.expandtabs(8).split("\n")), "text/x-rst")
