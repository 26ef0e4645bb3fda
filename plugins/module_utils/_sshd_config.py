# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A model of sshd_config that edits the occurrence sshd really uses.

The model part (everything above the "sshd binary helpers" line) has no Ansible import, so it can be
unit-tested alone. Semantics followed (sshd_config(5) and servconf.c of OpenSSH):

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
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

SSHDIR = "/etc/ssh"
DEFAULT_CONFIG = "/etc/ssh/sshd_config"
DEFAULT_PID_FILE = "/run/sshd.pid"
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

# Module option name -> sshd keyword (lower case).
OPTION_KEYWORDS: Dict[str, str] = {
    "gateway_ports": "gatewayports",
    "allow_tcp_forwarding": "allowtcpforwarding",
    "allow_stream_local_forwarding": "allowstreamlocalforwarding",
    "permit_open": "permitopen",
    "permit_listen": "permitlisten",
    "disable_forwarding": "disableforwarding",
    "allow_agent_forwarding": "allowagentforwarding",
    "client_alive_interval": "clientaliveinterval",
    "client_alive_count_max": "clientalivecountmax",
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


class ValidationError(SshdConfigError):
    """``sshd -t`` rejected the candidate configuration."""


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
        if scope is None:
            index = self._global_insert_index()
            self._insert(index, "", line_text)
            return Change(keyword, None, "inserted", index + 1, None, text), warnings
        block = self._find_block(scope)
        if block is None:
            self._ensure_final_newline()
            eol = self._eol()
            if self.lines and self.lines[-1].strip():
                self.lines.append(eol)
            self.lines.append(f"Match {' '.join(match.split())}{eol}")  # type: ignore[union-attr]
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


# -- sshd binary helpers (subprocess; still no Ansible import) ---------------------------------------


def find_sshd(explicit: Optional[str] = None) -> Optional[str]:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for candidate in ("/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if os.access(candidate, os.X_OK):
            return candidate
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(directory, "sshd")
        if directory and os.access(candidate, os.X_OK):
            return candidate
    return None


def run_sshd(sshd: str, args: Sequence[str], timeout: float = 30.0) -> Tuple[int, str, str]:
    try:
        proc = subprocess.run([sshd, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SshdConfigError(f"{sshd} {' '.join(args)} did not finish within {timeout:.0f} s") from exc
    except OSError as exc:
        raise SshdConfigError(f"cannot run {sshd}: {exc}") from exc
    return proc.returncode, proc.stdout, proc.stderr


def validate_file(sshd: str, path: str) -> None:
    """``sshd -t -f path``; raises ValidationError with sshd's own message."""
    rc, out, err = run_sshd(sshd, ["-t", "-f", path])
    if rc != 0:
        message = (err.strip() or out.strip() or f"exit code {rc}").replace("\n", "; ")
        raise ValidationError(message)


def effective_values(sshd: str, path: str, connection_spec: Optional[str] = None) -> Dict[str, str]:
    """``sshd -T -f path [-C spec]`` as a dict keyword (lower case) -> value text."""
    args = ["-T", "-f", path]
    if connection_spec:
        args += ["-C", connection_spec]
    rc, out, err = run_sshd(sshd, args)
    if rc != 0:
        raise SshdConfigError(f"sshd -T failed: {(err.strip() or out.strip()).replace(chr(10), '; ')}")
    values: Dict[str, str] = {}
    for line in out.splitlines():
        key, _sep, value = line.partition(" ")
        if key and key not in values:
            values[key] = value.strip()
    return values


def listen_socket_inodes(pid: int) -> Set[str]:
    """Inodes of the TCP sockets in LISTEN state held by ``pid`` (to see an sshd re-exec after SIGHUP)."""
    listening: Set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                next(handle, None)
                for row in handle:
                    cols = row.split()
                    if len(cols) > 9 and cols[3] == "0A":
                        listening.add(cols[9])
        except OSError:
            continue
    held: Set[str] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return held
    for name in names:
        try:
            target = os.readlink(os.path.join(fd_dir, name))
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in listening:
            held.add(target[8:-1])
    return held


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(pid_file: str) -> int:
    try:
        with open(pid_file, encoding="ascii") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError) as exc:
        raise SshdConfigError(f"cannot read a pid from {pid_file}: {exc}; is sshd running? set pid_file or reload_method") from exc


def sighup_and_wait(pid: int, timeout: float = 10.0) -> bool:
    """SIGHUP sshd and wait until it listens on new sockets (sshd re-executes itself on SIGHUP).

    Returns True when the re-exec was seen within ``timeout``.
    """
    before = listen_socket_inodes(pid)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise SshdConfigError(f"sshd pid {pid} does not exist: is sshd running?") from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if not pid_alive(pid):
            return False
        now = listen_socket_inodes(pid)
        if now and not (now & before):
            return True
    return False


__all__ = [
    "CANONICAL",
    "OPTION_KEYWORDS",
    "Change",
    "ConflictError",
    "Directive",
    "InvalidValueError",
    "SshdConfig",
    "SshdConfigError",
    "ValidationError",
    "derive_connection_spec",
    "effective_values",
    "find_sshd",
    "normalise_criteria",
    "normalise_value",
    "render_value",
    "validate_file",
]


# -- module glue: takes an AnsibleModule-like object (duck-typed, so still no Ansible import here) ---------


def _systemd_running() -> bool:
    return os.path.isdir("/run/systemd/system")


class _Runner:
    """One run of the sshd_forwarding module."""

    def __init__(self, module: object) -> None:
        self.module = module
        self.params: Dict[str, object] = module.params  # type: ignore[attr-defined]
        self.warnings: List[str] = []
        self.result: Dict[str, object] = {"changed": False}

    def fail(self, msg: str, **extra: object) -> None:
        out = dict(self.result)
        out.update(extra)
        if self.warnings:
            out["sshd_warnings"] = list(self.warnings)
        self.module.fail_json(msg=msg, **out)  # type: ignore[attr-defined]

    # .. settings ..................................................................................

    def settings(self) -> Dict[str, object]:
        out: Dict[str, object] = {}
        for option, keyword in OPTION_KEYWORDS.items():
            value = self.params.get(option)
            if value is not None:
                out[keyword] = value
        return out

    def run(self) -> None:
        config_file = str(self.params["config_file"])
        match = self.params.get("match")
        match_str = str(match) if match else None
        check_mode = bool(getattr(self.module, "check_mode", False))
        settings = self.settings()
        self.result.update({"config_file": config_file, "match": match_str, "changes": [], "effective": {}, "reloaded": False})
        sshd = find_sshd(self.params.get("sshd_binary"))  # type: ignore[arg-type]
        if sshd is None and (self.params.get("validate") or settings):
            self.fail("sshd binary not found in /usr/sbin, /usr/local/sbin or PATH; set sshd_binary")
        if not os.path.isfile(config_file):
            self.fail(f"{config_file} does not exist")
        try:
            config = SshdConfig.load(config_file)
            before = config.render()
            changes = []
            for keyword, value in settings.items():
                change, warnings = config.set(keyword, value, match_str)
                changes.append(change.as_dict())
                self.warnings.extend(warnings)
        except SshdConfigError as exc:
            self.fail(str(exc))
            return
        after = config.render()
        changed = after != before
        self.result["changes"] = [c for c in changes if c["action"] != "unchanged"]
        self.result["changed"] = changed
        if changed and getattr(self.module, "_diff", False):
            self.result["diff"] = {
                "before": before,
                "after": after,
                "before_header": f"{config_file} (content)",
                "after_header": f"{config_file} (content)",
            }
        candidate = None
        try:
            if changed:
                candidate = self.write_candidate(config_file, after, check_mode)
                if self.params.get("validate"):
                    self.validate(sshd, candidate, config_file)  # type: ignore[arg-type]
                if not check_mode:
                    if self.params.get("backup"):
                        self.result["backup_file"] = self.module.backup_local(config_file)  # type: ignore[attr-defined]
                    self.module.atomic_move(candidate, config_file)  # type: ignore[attr-defined]
                    candidate = None
            elif self.params.get("force_reload") and self.params.get("validate") and sshd:
                self.validate(sshd, config_file, config_file)
            want_reload = (changed or bool(self.params.get("force_reload"))) and bool(self.params.get("reload"))
            if want_reload and not check_mode:
                self.reload(sshd, config_file)
                self.result["changed"] = True
            if settings and sshd:
                self.confirm(sshd, candidate or config_file, settings, match_str)
        finally:
            if candidate and os.path.exists(candidate):
                os.unlink(candidate)
        if self.warnings:
            self.result["sshd_warnings"] = list(self.warnings)
            for warning in self.warnings:
                self.module.warn(warning)  # type: ignore[attr-defined]
        self.module.exit_json(**self.result)  # type: ignore[attr-defined]

    def write_candidate(self, config_file: str, text: str, check_mode: bool) -> str:
        directory = getattr(self.module, "tmpdir", None) if check_mode else os.path.dirname(os.path.abspath(config_file))
        fd, path = tempfile.mkstemp(dir=directory, prefix=".sshd_config.", suffix=".burrow")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        try:
            os.chmod(path, os.stat(config_file).st_mode & 0o7777)
        except OSError:
            pass
        return path

    def validate(self, sshd: str, path: str, config_file: str) -> None:
        try:
            validate_file(sshd, path)
        except ValidationError as exc:
            message = str(exc).replace(path, f"{config_file} (candidate)")
            detail = ""
            if path != config_file:
                try:
                    validate_file(sshd, config_file)
                except ValidationError as orig:
                    detail = f" Note: the current {config_file} is already invalid ({orig}); fix it by hand first."
            self.fail(
                f"sshd -t rejected the configuration, so {config_file} and the running sshd were left untouched: {message}.{detail}",
                changed=False,
                validation_error=str(exc),
            )

    # .. reload ....................................................................................

    def pid_file(self, sshd: Optional[str], config_file: str) -> str:
        explicit = self.params.get("pid_file")
        if explicit:
            return str(explicit)
        if sshd:
            try:
                return effective_values(sshd, config_file).get("pidfile", DEFAULT_PID_FILE)
            except SshdConfigError:
                return DEFAULT_PID_FILE
        return DEFAULT_PID_FILE

    def service_command(self) -> Optional[List[str]]:
        get_bin_path = self.module.get_bin_path  # type: ignore[attr-defined]
        if _systemd_running():
            systemctl = get_bin_path("systemctl")
            if systemctl:
                for unit in ("ssh", "sshd"):
                    rc, out, _err = self.module.run_command([systemctl, "show", "-p", "LoadState", "--value", unit])  # type: ignore[attr-defined]
                    if rc == 0 and out.strip() == "loaded":
                        return [systemctl, "reload", unit]
        service = get_bin_path("service")
        if service:
            for name in ("ssh", "sshd"):
                if os.path.exists(f"/etc/init.d/{name}"):
                    return [service, name, "reload"]
        return None

    def reload(self, sshd: Optional[str], config_file: str) -> None:
        method = str(self.params.get("reload_method") or "auto")
        if method == "none":
            self.result["reload_method"] = "none"
            return
        command = None
        if method in ("auto", "service"):
            command = self.service_command()
            if command is None and method == "service":
                self.fail("reload_method=service: neither systemd (systemctl) nor a 'service' script for ssh/sshd was found; use reload_method=signal")
        if command is not None:
            rc, out, err = self.module.run_command(command)  # type: ignore[attr-defined]
            if rc != 0:
                self.fail(f"{' '.join(command)} failed (rc={rc}): {(err or out).strip()}", changed=True)
            self.result.update({"reloaded": True, "reload_method": "service", "reload_command": command})
            return
        pid_file = self.pid_file(sshd, config_file)
        try:
            pid = read_pid(pid_file)
            reopened = sighup_and_wait(pid)
        except SshdConfigError as exc:
            self.fail(str(exc), changed=True)
            return
        if not pid_alive(pid):
            self.fail(f"sshd (pid {pid} from {pid_file}) exited after SIGHUP: look at its log; the new file is in place", changed=True)
        if not reopened:
            self.warnings.append(f"sent SIGHUP to sshd pid {pid} but did not see it re-open its listeners within 10 s")
        self.result.update({"reloaded": True, "reload_method": "signal", "pid": pid, "pid_file": pid_file})

    # .. confirm ...................................................................................

    def confirm(self, sshd: str, path: str, settings: Dict[str, object], match: Optional[str]) -> None:
        spec: Optional[str] = None
        if match:
            spec = str(self.params.get("match_test") or "") or derive_connection_spec(match)
            if not spec:
                self.warnings.append(f"cannot derive an 'sshd -T -C' connection spec from 'Match {match}': set match_test to confirm the effective values")
                return
        try:
            values = effective_values(sshd, path, spec)
        except SshdConfigError as exc:
            self.warnings.append(f"could not confirm the effective values: {exc}")
            return
        self.result["connection_spec"] = spec
        effective = {keyword: values.get(keyword) for keyword in settings}
        self.result["effective"] = effective
        wrong = []
        for keyword, value in settings.items():
            wanted = normalise_value(keyword, render_value(keyword, value))
            if normalise_value(keyword, effective.get(keyword) or "") != wanted:
                wrong.append(f"{CANONICAL[keyword]}: wanted '{wanted}', sshd -T reports '{effective.get(keyword)}'")
        if wrong:
            where = f"for connection {spec}" if spec else "globally"
            self.fail(
                f"the file now says what was asked, but sshd -T {where} disagrees: {'; '.join(wrong)}. "
                "An earlier Match block or included file wins; see sshd_warnings.",
                changed=bool(self.result.get("changed")),
                effective=effective,
            )


def run_module(module: object) -> None:
    """Entry point used by plugins/modules/sshd_forwarding.py."""
    _Runner(module).run()
