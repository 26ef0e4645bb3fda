# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""A model of sshd_config that edits the occurrence sshd really uses.

No Ansible import, so it can be unit-tested alone. Semantics followed (sshd_config(5) and servconf.c of OpenSSH):

* for each keyword the first value read wins; lines after ``Match`` belong to that block until the next
  ``Match`` or the end of the file;
* ``Include`` inserts the named files (globs, lexical order, relative paths resolved against /etc/ssh) at
  that point; an included file starts in the scope of the ``Include`` line, and a ``Match`` inside an
  included file ends at the end of that file;
* if several satisfied ``Match`` blocks set a keyword, the first one wins.

The live file is kept line by line: comments, blank lines, indentation and line endings are preserved; an
edit replaces the value of one line, or inserts a line, nothing else.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

SSHDIR = "/etc/ssh"
MAX_INCLUDE_DEPTH = 16

# Canonical spelling of the keywords this model edits.
CANONICAL: Dict[str, str] = {
    "gatewayports": "GatewayPorts",
    "allowtcpforwarding": "AllowTcpForwarding",
    "allowstreamlocalforwarding": "AllowStreamLocalForwarding",
    "permitopen": "PermitOpen",
    "permitlisten": "PermitListen",
    "disableforwarding": "DisableForwarding",
    "allowagentforwarding": "AllowAgentForwarding",
    "clientaliveinterval": "ClientAliveInterval",
    "clientalivecountmax": "ClientAliveCountMax",
}

CHOICES: Dict[str, Tuple[str, ...]] = {
    "gatewayports": ("no", "yes", "clientspecified"),
    "allowtcpforwarding": ("yes", "no", "local", "remote", "all"),
    "allowstreamlocalforwarding": ("yes", "no", "local", "remote", "all"),
    "disableforwarding": ("yes", "no"),
    "allowagentforwarding": ("yes", "no"),
}

LIST_KEYWORDS = ("permitopen", "permitlisten")
INT_KEYWORDS = ("clientaliveinterval", "clientalivecountmax")

# Match criteria names (lower case) and the sshd -C connection-spec field each one feeds.
MATCH_CRITERIA: Dict[str, Optional[str]] = {
    "all": None,
    "user": "user",
    "group": None,
    "host": "host",
    "address": "addr",
    "localaddress": "laddr",
    "localport": "lport",
    "rdomain": "rdomain",
}

_KEYWORD_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<keyword>[A-Za-z][A-Za-z0-9]*)(?P<sep>[ \t]*=[ \t]*|[ \t]+)(?P<rest>.*?)(?P<eol>\r?\n)?$", re.DOTALL)
_BARE_KEYWORD_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<keyword>[A-Za-z][A-Za-z0-9]*)[ \t]*(?P<eol>\r?\n)?$")
_PORT_RE = re.compile(r"^(\*|[0-9]{1,5})$")
_HOST_RE = re.compile(r"^(\*|\[[0-9A-Fa-f:.%]+\]|[A-Za-z0-9_.*%-]+)$")


class SshdConfigError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class InvalidValueError(SshdConfigError):
    """A requested value is not valid for its keyword (raised before anything is written)."""


class ConflictError(SshdConfigError):
    """An earlier value in an included file wins over the line this model would write."""


@dataclass
class Directive:
    """One keyword line in one file."""

    path: str
    index: int  # 0-based line index in that file
    keyword: str  # lower case
    value: str  # raw value text, trailing comment removed
    scope: Optional[str]  # None for global, else the normalised Match criteria
    match_line: Optional[int] = None  # 0-based index of the Match line (in the main file) when scope is not None

    @property
    def lineno(self) -> int:
        return self.index + 1

    def where(self) -> str:
        return f"{self.path} line {self.lineno}"


@dataclass
class Change:
    keyword: str
    scope: Optional[str]
    action: str  # replaced | inserted | block_created | unchanged
    line: int  # 1-based line number in the main file after the edit
    old: Optional[str] = None
    new: Optional[str] = None

    def as_dict(self) -> Dict[str, object]:
        return {
            "keyword": CANONICAL.get(self.keyword, self.keyword),
            "match": self.scope,
            "action": self.action,
            "line": self.line,
            "old": self.old,
            "new": self.new,
        }


@dataclass
class _Parsed:
    keyword: Optional[str]
    indent: str = ""
    spelled: str = ""
    sep: str = " "
    value: str = ""
    comment: str = ""
    eol: str = "\n"


def split_comment(rest: str) -> Tuple[str, str]:
    """Split ``value  # comment`` (sshd ends the arguments at an unquoted ``#`` that starts a word)."""
    in_quote = False
    for pos, char in enumerate(rest):
        if char == '"':
            in_quote = not in_quote
        elif char == "#" and not in_quote and (pos == 0 or rest[pos - 1] in " \t"):
            value = rest[:pos]
            return value.rstrip(" \t"), rest[len(value.rstrip(" \t")) :]
    return rest.rstrip(" \t"), ""


def parse_line(line: str) -> _Parsed:
    stripped = line.strip()
    eol = "\r\n" if line.endswith("\r\n") else ("\n" if line.endswith("\n") else "")
    if not stripped or stripped.startswith("#"):
        return _Parsed(keyword=None, eol=eol)
    m = _KEYWORD_RE.match(line)
    if m is None:
        b = _BARE_KEYWORD_RE.match(line)
        if b is None:
            return _Parsed(keyword=None, eol=eol)
        return _Parsed(keyword=b.group("keyword").lower(), indent=b.group("indent"), spelled=b.group("keyword"), value="", eol=eol)
    value, comment = split_comment(m.group("rest"))
    return _Parsed(
        keyword=m.group("keyword").lower(),
        indent=m.group("indent"),
        spelled=m.group("keyword"),
        sep=m.group("sep"),
        value=value,
        comment=comment,
        eol=eol,
    )


def normalise_criteria(criteria: str) -> str:
    """``Match`` criteria compared the way sshd reads them: whitespace collapsed, criterion names case-insensitive."""
    tokens = criteria.replace("=", " ").split()
    out = []
    expect_name = True
    for token in tokens:
        low = token.lower()
        if expect_name and low in MATCH_CRITERIA:
            out.append(low)
            expect_name = low == "all"
            continue
        out.append(token)
        expect_name = True
    return " ".join(out)


def _quote_free_tokens(value: str) -> List[str]:
    return [t.strip('"') for t in value.split()]


def normalise_value(keyword: str, value: str) -> str:
    """A value in the form used to compare a file value, a requested value and ``sshd -T`` output."""
    tokens = _quote_free_tokens(value)
    if keyword in LIST_KEYWORDS:
        out = []
        for tok in tokens:
            low = tok.lower()
            if keyword == "permitlisten" and _PORT_RE.match(low):
                low = "*:" + low  # sshd -T prints a bare PermitListen port as *:port
            out.append(low)
        return " ".join(out)
    if not tokens:
        return ""
    return tokens[0].lower()


def render_value(keyword: str, value: object) -> str:
    """Check a requested value and give the text written after the keyword.

    Raises InvalidValueError naming the keyword and the value.
    """
    name = CANONICAL.get(keyword, keyword)
    if keyword in CHOICES:
        text = ("yes" if value else "no") if isinstance(value, bool) else str(value).strip().lower()
        if text not in CHOICES[keyword]:
            raise InvalidValueError(f"{name}: unsupported value {value!r}; expected one of {', '.join(CHOICES[keyword])}")
        return text
    if keyword in INT_KEYWORDS:
        if isinstance(value, bool):
            raise InvalidValueError(f"{name}: unsupported value {value!r}; expected a whole number of seconds (0 or more)")
        try:
            number = int(str(value).strip())
        except ValueError as exc:
            raise InvalidValueError(f"{name}: unsupported value {value!r}; expected a whole number (0 or more)") from exc
        if number < 0:
            raise InvalidValueError(f"{name}: unsupported value {value!r}; expected a whole number (0 or more)")
        return str(number)
    if keyword in LIST_KEYWORDS:
        items = [str(v).strip() for v in (value if isinstance(value, (list, tuple)) else [value])]
        if not items or any(not item for item in items):
            raise InvalidValueError(f"{name}: an empty list or an empty entry is not allowed; use ['any'] or ['none']")
        lows = [i.lower() for i in items]
        if ("any" in lows or "none" in lows) and len(items) > 1:
            raise InvalidValueError(f"{name}: {items!r}: 'any' and 'none' must be the only entry")
        for item in items:
            if item.lower() in ("any", "none"):
                continue
            _check_host_port(keyword, item)
        return " ".join(i.lower() if i.lower() in ("any", "none") else i for i in items)
    raise InvalidValueError(f"{name}: this module does not manage that keyword")


def _check_host_port(keyword: str, item: str) -> None:
    name = CANONICAL[keyword]
    if any(c in item for c in " \t\"'#"):
        raise InvalidValueError(f"{name}: invalid entry {item!r}: no spaces, quotes or '#'")
    if keyword == "permitlisten" and _PORT_RE.match(item):
        _check_port(name, item, item)
        return
    if item.startswith("["):
        close = item.find("]")
        if close < 0 or close + 1 >= len(item) or item[close + 1] != ":":
            raise InvalidValueError(f"{name}: invalid entry {item!r}; expected [ipv6]:port")
        host, port = item[: close + 1], item[close + 2 :]
    else:
        host, sep, port = item.rpartition(":")
        if not sep or ":" in host:
            raise InvalidValueError(
                f"{name}: invalid entry {item!r}; expected host:port (IPv6 as [addr]:port){' or port' if keyword == 'permitlisten' else ''}"
            )
    if not host or not _HOST_RE.match(host):
        raise InvalidValueError(f"{name}: invalid host in {item!r}")
    _check_port(name, item, port)


def _check_port(name: str, item: str, port: str) -> None:
    if not _PORT_RE.match(port) or (port != "*" and not 0 < int(port) <= 65535):
        raise InvalidValueError(f"{name}: invalid port in {item!r}; expected 1-65535 or *")


def include_targets(value: str, base_dir: str = SSHDIR) -> List[str]:
    """The files an ``Include`` line reads, in the order sshd reads them."""
    out: List[str] = []
    for token in _quote_free_tokens(value):
        pattern = os.path.expanduser(token if token.startswith(("/", "~")) else os.path.join(base_dir, token))
        out.extend(sorted(p for p in glob.glob(pattern) if os.path.isfile(p)))
    return out


class SshdConfig:
    """The main config file (editable) and its includes (read-only)."""

    def __init__(self, path: str, text: str, include_base: str = SSHDIR) -> None:
        self.path = path
        self.include_base = include_base
        self.lines: List[str] = text.splitlines(keepends=True)
        self._include_cache: Dict[str, List[str]] = {}

    @classmethod
    def load(cls, path: str, include_base: str = SSHDIR) -> SshdConfig:
        with open(path, encoding="utf-8", newline="") as handle:
            return cls(path, handle.read(), include_base=include_base)

    def render(self) -> str:
        return "".join(self.lines)

    # -- reading ---------------------------------------------------------------------------------

    def _file_lines(self, path: str) -> List[str]:
        if path not in self._include_cache:
            try:
                with open(path, encoding="utf-8", newline="") as handle:
                    self._include_cache[path] = handle.read().splitlines(keepends=True)
            except OSError as exc:
                raise SshdConfigError(f"cannot read included file {path}: {exc}") from exc
        return self._include_cache[path]

    def match_blocks(self) -> List[Tuple[int, str]]:
        """(0-based line index, normalised criteria) of each Match line of the main file."""
        out = []
        for index, line in enumerate(self.lines):
            parsed = parse_line(line)
            if parsed.keyword == "match":
                out.append((index, normalise_criteria(parsed.value)))
        return out

    def directives(self) -> Iterator[Directive]:
        """Every keyword line in the order sshd reads them, includes expanded, with its scope."""
        yield from self._walk(self.path, self.lines, None, None, 0)

    def _walk(self, path: str, lines: Sequence[str], scope: Optional[str], match_line: Optional[int], depth: int) -> Iterator[Directive]:
        if depth > MAX_INCLUDE_DEPTH:
            raise SshdConfigError(f"{path}: Include nested deeper than {MAX_INCLUDE_DEPTH} levels")
        for index, line in enumerate(lines):
            parsed = parse_line(line)
            if parsed.keyword is None:
                continue
            if parsed.keyword == "match":
                scope = normalise_criteria(parsed.value)
                match_line = index if depth == 0 else match_line
                yield Directive(path, index, "match", parsed.value, scope, match_line)
                continue
            directive = Directive(path, index, parsed.keyword, parsed.value, scope, match_line)
            yield directive
            if parsed.keyword == "include":
                for target in include_targets(parsed.value, self.include_base):
                    yield from self._walk(target, self._file_lines(target), scope, match_line, depth + 1)

    def occurrences(self, keyword: str, scope: Optional[str]) -> List[Directive]:
        """Lines setting ``keyword`` in ``scope`` (None: global), in reading order."""
        return [d for d in self.directives() if d.keyword == keyword and d.scope == scope]

    def effective(self, keyword: str, scope: Optional[str] = None) -> Optional[Directive]:
        found = self.occurrences(keyword, scope)
        return found[0] if found else None

    # -- editing ---------------------------------------------------------------------------------

    def set(self, keyword: str, value: object, match: Optional[str] = None) -> Tuple[Change, List[str]]:
        """Make ``value`` the effective value of ``keyword`` globally or in the ``Match match`` block.

        Returns the change and warnings. Raises InvalidValueError or ConflictError before touching anything.
        """
        keyword = keyword.lower()
        text = render_value(keyword, value)
        scope = normalise_criteria(match) if match else None
        if match is not None and not scope:
            raise InvalidValueError("match: empty Match criteria")
        warnings: List[str] = []
        found = self.occurrences(keyword, scope)
        name = CANONICAL.get(keyword, keyword)
        where_scope = f"the 'Match {scope}' block" if scope else "the global section"
        if scope is not None:
            warnings.extend(self._earlier_match_warnings(keyword, scope))
        if found:
            first = found[0]
            for dead in found[1:]:
                warnings.append(f"{name} at {dead.where()} is ignored by sshd: {first.where()} is read first in {where_scope}")
            if normalise_value(keyword, first.value) == normalise_value(keyword, text):
                return Change(keyword, scope, "unchanged", first.lineno if first.path == self.path else 0, first.value, first.value), warnings
            if first.path != self.path:
                raise ConflictError(
                    f"{name} is already set to '{first.value}' at {first.where()}, an included file that sshd reads before "
                    f"{self.path}, so a value written in {self.path} would be ignored. Change or remove it there "
                    f"(or set {name} {text} in that file), then run this task again."
                )
            old = first.value
            self._replace(first.index, text)
            return Change(keyword, scope, "replaced", first.lineno, old, text), warnings
        line_text = CANONICAL[keyword] + " " + text
        if scope is None or match is None:  # both or neither: an empty match raised above
            index = self._global_insert_index()
            self._insert(index, "", line_text)
            return Change(keyword, None, "inserted", index + 1, None, text), warnings
        block = self._find_block(scope)
        if block is None:
            self._ensure_final_newline()
            eol = self._eol()
            if self.lines and self.lines[-1].strip():
                self.lines.append(eol)
            self.lines.append(f"Match {' '.join(match.split())}{eol}")
            self.lines.append(f"    {line_text}{eol}")
            return Change(keyword, scope, "block_created", len(self.lines), None, text), warnings
        index, indent = self._block_insert_point(block)
        self._insert(index, indent, line_text)
        return Change(keyword, scope, "inserted", index + 1, None, text), warnings

    def _earlier_match_warnings(self, keyword: str, scope: str) -> List[str]:
        out = []
        for d in self.directives():
            if d.keyword == "match" and d.scope == scope:
                break
            if d.keyword == keyword and d.scope is not None and d.scope != scope and not _disjoint(d.scope, scope):
                out.append(
                    f"{CANONICAL.get(keyword, keyword)} is also set at {d.where()} in an earlier 'Match {d.scope}' block: "
                    f"for connections matching both, that earlier value wins"
                )
        return out

    def _eol(self) -> str:
        for line in self.lines:
            if line.endswith("\r\n"):
                return "\r\n"
            if line.endswith("\n"):
                return "\n"
        return "\n"

    def _ensure_final_newline(self) -> None:
        if self.lines and not self.lines[-1].endswith("\n"):
            self.lines[-1] += self._eol()

    def _replace(self, index: int, text: str) -> None:
        parsed = parse_line(self.lines[index])
        sep = parsed.sep if parsed.sep else " "
        comment = (" " + parsed.comment.lstrip(" \t")) if parsed.comment else ""
        self.lines[index] = f"{parsed.indent}{parsed.spelled}{sep}{text}{comment}{parsed.eol}"

    def _insert(self, index: int, indent: str, line_text: str) -> None:
        eol = self._eol()
        if index > 0:
            prev = self.lines[index - 1]
            if not prev.endswith("\n"):
                self.lines[index - 1] = prev + eol
        self.lines.insert(index, f"{indent}{line_text}{eol}")

    def _global_insert_index(self) -> int:
        """After the last keyword line before the first Match, else before the first Match's comments."""
        blocks = self.match_blocks()
        end = blocks[0][0] if blocks else len(self.lines)
        last_keyword = -1
        for index in range(end):
            if parse_line(self.lines[index]).keyword is not None:
                last_keyword = index
        if last_keyword >= 0:
            return last_keyword + 1
        if blocks:
            # no global keyword at all: put it above the comment lines that introduce the Match block
            index = end
            while index > 0 and self.lines[index - 1].strip().startswith("#"):
                index -= 1
            return index
        return len(self.lines)

    def _find_block(self, scope: str) -> Optional[int]:
        for index, criteria in self.match_blocks():
            if criteria == scope:
                return index
        return None

    def _block_insert_point(self, match_index: int) -> Tuple[int, str]:
        blocks = [i for i, _block in self.match_blocks()]
        following = [i for i in blocks if i > match_index]
        end = following[0] if following else len(self.lines)
        last = match_index
        indent: Optional[str] = None
        for index in range(match_index + 1, end):
            parsed = parse_line(self.lines[index])
            if parsed.keyword is not None:
                last = index
                if indent is None:
                    indent = parsed.indent
        return last + 1, indent if indent is not None else "    "


def _disjoint(first: str, second: str) -> bool:
    """True when two Match criteria cannot both hold (e.g. ``User a`` and ``User b``, literal values)."""
    spec_a, spec_b = derive_connection_spec(first), derive_connection_spec(second)
    if spec_a is None or spec_b is None or "/" in first or "/" in second:
        return False
    fields_a = dict(item.split("=", 1) for item in spec_a.split(","))
    fields_b = dict(item.split("=", 1) for item in spec_b.split(","))
    one_value = all("," not in token for token in (first + " " + second).split())
    return one_value and any(key in fields_b and fields_b[key] != value for key, value in fields_a.items())


def derive_connection_spec(criteria: str) -> Optional[str]:
    """An ``sshd -T -C`` spec that satisfies simple criteria (``User x``, ``Address 10.0.0.0/8``, ``Host h`` …).

    None when the criteria cannot be satisfied from their own text (Group, negations, wildcards): pass
    ``match_test`` then.
    """
    tokens = normalise_criteria(criteria).split()
    spec: Dict[str, str] = {}
    pos = 0
    while pos < len(tokens):
        name = tokens[pos].lower()
        if name == "all":
            pos += 1
            continue
        if name not in MATCH_CRITERIA or pos + 1 >= len(tokens):
            return None
        field_name = MATCH_CRITERIA[name]
        pattern = tokens[pos + 1].split(",")[0]
        pos += 2
        if field_name is None or pattern.startswith("!") or any(c in pattern for c in "*?"):
            return None
        if field_name in ("addr", "laddr") and "/" in pattern:
            try:
                network = ipaddress.ip_network(pattern, strict=False)
            except ValueError:
                return None
            host = next(iter(network.hosts()), network.network_address)
            pattern = str(host)
        spec[field_name] = pattern
    if not spec:
        return None
    return ",".join(f"{k}={v}" for k, v in spec.items())
