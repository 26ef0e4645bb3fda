# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The one OpenSSH client configuration reader, used by the tunnel process and the connection plugin's broker.

A hop names a host as the user would give it to ``ssh``; the configuration fills what the declaration left
open (HostName, User, Port, IdentityFile, UserKnownHostsFile, StrictHostKeyChecking, Compression, ...; the hop's
fields are None when undeclared), and a ProxyJump of the target is used when
the declaration gives no jump hosts of its own, as ``ssh -J`` overrides the configuration.
"""

from __future__ import annotations

import dataclasses
import getpass
import glob
import os
import re
import shlex
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError, Unreachable
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.forms import parse_jump_list
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Hop
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.library import enable_match_exec, paramiko  # paramiko: None without it

CONFIG_ENV = "BURROW_SSH_CONFIG"
DEFAULT_CONFIG = "~/.ssh/config"
DISABLED = ("", "none")
# What a jump host found through ProxyJump takes from the hop that named it: the checking policy, not credentials
# (those come from the jump host's own Host entry, as with ssh -J).
INHERITED_BY_JUMPS = ("host_key_checking", "use_agent", "known_hosts_file")
# OpenSSH's READCONF_MAX_DEPTH: how deep Include may nest.
MAX_INCLUDE_DEPTH = 16
# paramiko expands only some tokens of ProxyCommand, from the configuration's values rather than the hop's, and has no
# %%: the reader hides every % from it and expands the tokens itself once the hop is known.
PERCENT_PLACEHOLDER = "\x00"
PROXY_TOKENS = "hpnr%"
# Keywords burrow applies to a hop (docs/ssh-config.md lists them, tests/unit checks the table against this).
HONOURED = (
    "host",
    "match",
    "include",
    "hostname",
    "user",
    "port",
    "identityfile",
    "userknownhostsfile",
    "proxyjump",
    "proxycommand",
    "certificatefile",
    "serveraliveinterval",
    "serveralivecountmax",
    "connecttimeout",
    "stricthostkeychecking",
    "identityagent",
    "identitiesonly",
    "globalknownhostsfile",
    "hostkeyalias",
    "compression",
    "forwardagent",
)
# StrictHostKeyChecking as host_key_checking: ask would prompt, which burrow never does, so it is as strict as yes.
STRICT_HOST_KEY_CHECKING = {"yes": "strict", "ask": "strict", "accept-new": "accept-new", "no": "off", "off": "off"}
YES_NO = {"yes": True, "no": False}
# Keywords that change where or how ssh connects and that burrow cannot honour: a host entry with one is refused
# (with the value that would be harmless, if any), never silently connected some other way.
REFUSED = ("proxyusefdpass", "bindaddress", "bindinterface", "addressfamily")
# The values of those keywords that ask for nothing burrow does not do anyway.
REFUSED_HARMLESS = {"proxyusefdpass": "no", "addressfamily": "any"}


def config_path(explicit: str | None = None) -> str | None:
    """The file to read: ``explicit`` (an option), else $BURROW_SSH_CONFIG, else ~/.ssh/config; '' or 'none' turn it off."""
    chosen = explicit if explicit is not None else os.environ.get(CONFIG_ENV, DEFAULT_CONFIG)
    if chosen.strip().lower() in DISABLED:
        return None
    path = os.path.expanduser(chosen)
    return path if os.path.isfile(path) else None


def _keyword(line: str) -> tuple[str, str]:
    """The keyword (lower case) and the rest of an ssh_config line ('Keyword value' or 'Keyword=value')."""
    match = re.match(r"\s*([A-Za-z]+)\s*(?:=\s*|\s+|$)(.*)$", line)
    if not match:
        return "", ""
    return match.group(1).lower(), match.group(2).strip()


def _include_paths(argument: str, directory: str, origin: str) -> list[str]:
    try:
        patterns = shlex.split(argument)
    except ValueError as exc:
        raise Unreachable(f"cannot read the Include line in {origin}: {exc}", advice="fix the quoting of that line") from exc
    if not patterns:
        raise Unreachable(f"Include in {origin} names no file", advice="give it a path or a glob")
    paths: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if not os.path.isabs(pattern):
            pattern = os.path.join(directory, pattern)
        # As ssh: a glob that matches nothing includes nothing; the matches are read in lexical order.
        paths.extend(sorted(glob.glob(pattern)))
    return paths


def expand_includes(path: str, stack: tuple[str, ...] = ()) -> str:
    """The text of an ssh_config with every Include replaced by the files it names.

    Relative paths are taken from the including file's directory (~/.ssh for the user's configuration, as ssh does).
    An Include inside a Host or Match block applies to that block only: after the included text, the block's line is
    repeated so that the including file's next lines belong to it again. Nesting is bounded and loops are refused.
    """
    real = os.path.realpath(path)
    if real in stack:
        chain = " -> ".join([*stack, real])
        raise Unreachable(f"ssh_config Include loop: {chain}", advice="remove the Include that names a file already being read")
    if len(stack) >= MAX_INCLUDE_DEPTH:
        raise Unreachable(f"ssh_config Include nested deeper than {MAX_INCLUDE_DEPTH} files at {path}", advice="flatten the Include chain")
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise Unreachable(f"cannot read ssh_config file {path}: {exc}", advice="fix its permissions or remove the Include naming it") from exc
    out: list[str] = []
    block = ""
    for line in lines:
        keyword, argument = _keyword(line)
        if keyword in ("host", "match"):
            block = line
        if keyword == "proxycommand":
            line = line.replace("%", PERCENT_PLACEHOLDER)
        if keyword != "include":
            out.append(line)
            continue
        for included in _include_paths(argument, os.path.dirname(path), path):
            if os.path.isdir(included):
                continue
            text = expand_includes(included, (*stack, real))
            out.append(text)
            if block and any(_keyword(inner)[0] in ("host", "match") for inner in text.splitlines()):
                out.append(block)
    return "\n".join(out) + "\n"


def expand_proxy_command(template: str, hop: Hop, original: str) -> str:
    """ProxyCommand's tokens: %h the host name, %p the port, %r the remote user, %n the name as given, %% a percent."""
    values = {"h": hop.host, "p": str(hop.port), "r": hop.user or getpass.getuser(), "n": original, "%": "%"}
    out: list[str] = []
    index = 0
    while index < len(template):
        char = template[index]
        if char == "%":
            token = template[index + 1 : index + 2]
            if token not in values:
                raise Unreachable(
                    f"ProxyCommand for {original} uses %{token}, which burrow does not expand",
                    advice="use only %h, %p, %r, %n and %% in a ProxyCommand",
                    hop=hop.label(),
                )
            out.append(values[token])
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def expand_file_tokens(value: str, hop: Hop, original: str) -> str:
    """The tokens ssh expands in a known_hosts file name: ~, %h %p %r %u %d %n %%."""
    values = {
        "h": hop.host,
        "p": str(hop.port),
        "r": hop.user or getpass.getuser(),
        "u": getpass.getuser(),
        "d": os.path.expanduser("~"),
        "n": original,
        "%": "%",
    }
    expanded = re.sub(r"%(.)", lambda match: values.get(match.group(1), match.group(0)), value)
    return os.path.expanduser(expanded)


def _choice(entry: dict[str, t.Any], keyword: str, choices: t.Mapping[str, t.Any], host: str, path: str | None) -> t.Any:
    value = str(entry[keyword]).strip().lower()
    if value not in choices:
        raise Unreachable(f"{path} sets {keyword} {entry[keyword]} for {host}, which burrow does not understand", advice=f"use one of: {', '.join(choices)}")
    return choices[value]


def _number(entry: dict[str, t.Any], keyword: str, host: str, path: str | None, low: float) -> int:
    try:
        value = int(str(entry[keyword]).strip())
    except ValueError:
        value = -1
    if value < low:
        raise Unreachable(f"{path} sets {keyword} {entry[keyword]} for {host}: not a number of at least {low:g}", advice="fix that line")
    return value


class SshConfig:
    """A parsed ssh_config (or none): looks up a host's entry and applies it to hops."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._config: t.Any = None
        if path is not None and paramiko is not None:
            text = expand_includes(path)
            enable_match_exec(text)
            try:
                self._config = paramiko.SSHConfig.from_text(text)
            except (paramiko.SSHException, ValueError) as exc:
                raise Unreachable(f"cannot parse ssh_config {path}: {exc}", advice="fix the file or set ssh_config_file to none") from exc

    @classmethod
    def load(cls, explicit: str | None = None) -> SshConfig:
        return cls(config_path(explicit))

    def lookup(self, host: str) -> dict[str, t.Any]:
        if self._config is None:
            return {}
        try:
            entry = dict(self._config.lookup(host))
        except (paramiko.SSHException, ValueError, KeyError, ImportError) as exc:
            # ImportError: Match exec needs the invoke library (library.enable_match_exec), which is not installed.
            raise Unreachable(f"cannot apply {self.path} to {host}: {exc or type(exc).__name__}", advice="fix that host's Host or Match lines") from exc
        command = entry.get("proxycommand")
        if isinstance(command, str):
            entry["proxycommand"] = command.replace(PERCENT_PLACEHOLDER, "%")
        for keyword, harmless in REFUSED_HARMLESS.items():
            if str(entry.get(keyword, "")).lower() == harmless:
                entry.pop(keyword)
        refused = sorted(keyword for keyword in REFUSED if keyword in entry)
        if refused:
            lines = ", ".join(f"{keyword} {entry[keyword]}" for keyword in refused)
            raise Unreachable(
                f"{self.path} sets {lines} for {host}, which burrow cannot honour; it would connect differently from ssh",
                advice="remove it for this host (docs/ssh-config.md lists the keywords burrow reads)",
            )
        return entry

    def apply(self, hop: Hop, first: bool = True) -> Hop:
        """Fill what the hop left open from its Host entry, as ssh(1) would.

        Only the first hop of a chain connects through a ProxyCommand: a later hop's (from the configuration) is
        ignored because the previous hop carries it, as ``ssh -J`` does.
        """
        entry = self.lookup(hop.host)
        if not entry:
            return self._expand_proxy(hop, hop.host) if first else hop
        changes: dict[str, t.Any] = {}
        hostname = entry.get("hostname")
        if hostname and hostname != hop.host:
            changes["host"] = hostname
        if hop.user is None and entry.get("user"):
            changes["user"] = entry["user"]
        if hop.port == 22 and entry.get("port"):
            changes["port"] = int(entry["port"])
        if hop.private_key_file is None and hop.private_key is None and entry.get("identityfile"):
            existing = [path for path in entry["identityfile"] if os.path.exists(os.path.expanduser(path))]
            if existing:
                changes["private_key_file"] = existing[0]
        resolved = dataclasses.replace(hop, **changes) if changes else hop
        if hop.known_hosts_file is None and entry.get("userknownhostsfile"):
            # Every file is consulted, as ssh does; accept-new records keys in the first one.
            files = [expand_file_tokens(name, resolved, hop.host) for name in shlex.split(str(entry["userknownhostsfile"]))]
            if files and files[0].lower() != "none":
                changes["known_hosts_file"] = files[0]
                changes["extra_known_hosts_files"] = tuple(files[1:])
        if entry.get("globalknownhostsfile"):
            names = shlex.split(str(entry["globalknownhostsfile"]))
            changes["global_known_hosts_files"] = tuple(expand_file_tokens(name, resolved, hop.host) for name in names if name.lower() != "none")
        if entry.get("hostkeyalias"):
            changes["host_key_alias"] = str(entry["hostkeyalias"]).strip()
        if hop.host_key_checking is None and entry.get("stricthostkeychecking"):
            changes["host_key_checking"] = _choice(entry, "stricthostkeychecking", STRICT_HOST_KEY_CHECKING, hop.host, self.path)
        if entry.get("identityagent"):
            changes["identity_agent"] = str(entry["identityagent"]).strip()
        if entry.get("identitiesonly"):
            changes["identities_only"] = _choice(entry, "identitiesonly", YES_NO, hop.host, self.path)
        if hop.compression is None and entry.get("compression"):
            changes["compression"] = _choice(entry, "compression", YES_NO, hop.host, self.path)
        if hop.forward_agent is None and entry.get("forwardagent"):
            changes["forward_agent"] = _choice(entry, "forwardagent", YES_NO, hop.host, self.path)
        if entry.get("serveraliveinterval"):
            # 0 (ssh: no keepalives) leaves burrow's default: a tunnel always watches its connection.
            changes["server_alive_interval"] = _number(entry, "serveraliveinterval", hop.host, self.path, 0) or None
        if entry.get("serveralivecountmax"):
            changes["server_alive_count_max"] = _number(entry, "serveralivecountmax", hop.host, self.path, 1)
        if entry.get("connecttimeout") and str(entry["connecttimeout"]).strip().lower() != "none":
            changes["connect_timeout"] = float(_number(entry, "connecttimeout", hop.host, self.path, 1))
        if hop.certificate_file is None and entry.get("certificatefile"):
            changes["certificate_file"] = os.path.expanduser(str(entry["certificatefile"]))
        if first and hop.proxy_command is None and entry.get("proxycommand"):
            changes["proxy_command"] = entry["proxycommand"]
        applied = dataclasses.replace(hop, **changes) if changes else hop
        return self._expand_proxy(applied, hop.host) if first else applied

    @staticmethod
    def _expand_proxy(hop: Hop, original: str) -> Hop:
        if hop.proxy_command is None or hop.proxy_command.strip().lower() == "none":
            return dataclasses.replace(hop, proxy_command=None) if hop.proxy_command is not None else hop
        return dataclasses.replace(hop, proxy_command=expand_proxy_command(hop.proxy_command, hop, original))

    def jumps(self, target: Hop) -> list[Hop]:
        """The ProxyJump hosts of the target's entry, each resolved through its own entry."""
        entry = self.lookup(target.host)
        jump = entry.get("proxyjump")
        if not jump or jump.lower() == "none":
            return []
        if target.proxy_command is not None or entry.get("proxycommand"):
            raise Unreachable(
                f"both ProxyJump and ProxyCommand apply to {target.host} (from {self.path} or the task)",
                advice="keep one of them: ssh uses whichever it reads first, burrow refuses to guess",
                hop=target.label(),
            )
        try:
            hops = parse_jump_list(jump, field=f"ProxyJump of {target.host} in {self.path}")
        except SpecError as exc:
            raise Unreachable(str(exc), advice=f"fix the ProxyJump line in {self.path}") from exc
        inherited = {name: getattr(target, name) for name in INHERITED_BY_JUMPS if getattr(target, name) is not None}
        return [self.apply(dataclasses.replace(hop, **inherited), first=index == 0) for index, hop in enumerate(hops)]

    def resolve(self, hops: t.Sequence[Hop]) -> list[Hop]:
        """The chain to connect: every hop through its entry, and the target's ProxyJump when no jump hosts were given."""
        for hop in hops[1:]:
            if hop.proxy_command is not None:
                raise SpecError("proxy_command", hop.proxy_command, f"applies to the first hop only, not to {hop.label()} (the hop before it carries it)")
        jumps = self.jumps(hops[0]) if len(hops) == 1 else []
        return jumps + [self.apply(hop, first=not jumps and index == 0) for index, hop in enumerate(hops)]
