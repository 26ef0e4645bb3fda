# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The one OpenSSH client configuration reader, used by the tunnel process and the connection plugin's broker.

A hop names a host as the user would give it to ``ssh``; the configuration fills what the declaration left
open (HostName, User, Port, IdentityFile, UserKnownHostsFile), and a ProxyJump of the target is used when
the declaration gives no jump hosts of its own, as ``ssh -J`` overrides the configuration.
"""

from __future__ import annotations

import dataclasses
import os
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError, Unreachable
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.forms import parse_jump_list
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Hop

try:
    import paramiko
except ImportError:  # pragma: no cover - the caller checks transport.HAS_PARAMIKO first
    paramiko = None

CONFIG_ENV = "BURROW_SSH_CONFIG"
DEFAULT_CONFIG = "~/.ssh/config"
DISABLED = ("", "none")
# What a jump host found through ProxyJump takes from the hop that named it: the checking policy, not credentials
# (those come from the jump host's own Host entry, as with ssh -J).
INHERITED_BY_JUMPS = ("host_key_checking", "use_agent", "known_hosts_file")


def config_path(explicit: str | None = None) -> str | None:
    """The file to read: ``explicit`` (an option), else $BURROW_SSH_CONFIG, else ~/.ssh/config; '' or 'none' turn it off."""
    chosen = explicit if explicit is not None else os.environ.get(CONFIG_ENV, DEFAULT_CONFIG)
    if chosen.strip().lower() in DISABLED:
        return None
    path = os.path.expanduser(chosen)
    return path if os.path.isfile(path) else None


class SshConfig:
    """A parsed ssh_config (or none): looks up a host's entry and applies it to hops."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._config: t.Any = None
        if path is not None and paramiko is not None:
            try:
                self._config = paramiko.SSHConfig.from_path(path)
            except (OSError, paramiko.SSHException, ValueError):
                self._config = None

    @classmethod
    def load(cls, explicit: str | None = None) -> SshConfig:
        return cls(config_path(explicit))

    def lookup(self, host: str) -> dict[str, t.Any]:
        return dict(self._config.lookup(host)) if self._config is not None else {}

    def apply(self, hop: Hop) -> Hop:
        """Fill what the hop left open from its Host entry, as ssh(1) would."""
        entry = self.lookup(hop.host)
        if not entry:
            return hop
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
        if hop.known_hosts_file is None and entry.get("userknownhostsfile"):
            changes["known_hosts_file"] = str(entry["userknownhostsfile"]).split()[0]
        return dataclasses.replace(hop, **changes) if changes else hop

    def jumps(self, target: Hop) -> list[Hop]:
        """The ProxyJump hosts of the target's entry, each resolved through its own entry."""
        jump = self.lookup(target.host).get("proxyjump")
        if not jump or jump.lower() == "none":
            return []
        try:
            hops = parse_jump_list(jump, field=f"ProxyJump of {target.host} in {self.path}")
        except SpecError as exc:
            raise Unreachable(str(exc), advice=f"fix the ProxyJump line in {self.path}") from exc
        inherited = {name: getattr(target, name) for name in INHERITED_BY_JUMPS if getattr(target, name) is not None}
        return [self.apply(dataclasses.replace(hop, **inherited)) for hop in hops]

    def resolve(self, hops: t.Sequence[Hop]) -> list[Hop]:
        """The chain to connect: every hop through its entry, and the target's ProxyJump when no jump hosts were given."""
        resolved = [self.apply(hop) for hop in hops]
        if len(hops) == 1:
            resolved = self.jumps(hops[0]) + resolved
        return resolved
