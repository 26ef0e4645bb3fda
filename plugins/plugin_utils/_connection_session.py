# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""A burrow.ssh.tunneled connection's options turned into a validated hop chain (in the session broker).

The worker sends its raw options and the broker validates them here: the parser and paramiko are already loaded
in the broker, while a worker would compile them again for every task. Errors are SpecErrors naming the host
variable (``burrow_via[1].port``), which the plugin raises as option errors.
"""

from __future__ import annotations

import dataclasses
import os
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._spec import Hop, SpecError, parse_hop, parse_jump_list

HOST_KEY_CHECKING_WORDS = {"true": "strict", "yes": "strict", "on": "strict", "1": "strict", "false": "off", "no": "off", "0": "off"}
DEFAULT_IDLE_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class Session:
    hops: tuple[Hop, ...]
    name: str
    connect_timeout: float
    idle_timeout: float
    owner: tuple[int, int] | None

    @property
    def label(self) -> str:
        *via, target = self.hops
        return target.label() + (" via " + ", ".join(hop.label() for hop in via) if via else "")


def host_key_checking(value: t.Any) -> str:
    text = str(value).strip().lower() if value is not None else "strict"
    text = HOST_KEY_CHECKING_WORDS.get(text, text)
    if text not in ("strict", "accept-new", "off"):
        raise SpecError("burrow_host_key_checking", value, "must be strict, accept-new or off (or a boolean)")
    return text


def _number(options: t.Mapping[str, t.Any], key: str, field: str, default: float) -> float:
    value = options.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpecError(field, value, "must be a number of seconds") from None
    if number <= 0:
        raise SpecError(field, value, "must be greater than 0")
    return number


def build_session(options: t.Mapping[str, t.Any]) -> Session:
    """The hop chain (jump hosts, then the target) and session settings from the plugin's options."""
    defaults: dict[str, t.Any] = {
        "user": options.get("remote_user"),
        "private_key_file": options.get("private_key_file"),
        "private_key_passphrase": options.get("private_key_passphrase"),
        "use_agent": options.get("use_agent"),
        "host_key_checking": host_key_checking(options.get("host_key_checking")),
        "known_hosts_file": options.get("known_hosts_file"),
    }
    defaults = {key: value for key, value in defaults.items() if value is not None and value != ""}
    host = str(options.get("remote_addr"))
    via = via_hops(options.get("via"), host, defaults, options.get("ssh_config_file"))
    target_data: dict[str, t.Any] = {"host": host, "port": options.get("port")}
    for key in ("password", "host_key_fingerprint"):
        if options.get(key):
            target_data[key] = options[key]
    target = parse_hop(target_data, "ansible_host", defaults)
    owner = options.get("owner")
    return Session(
        hops=(*via, target),
        name=str(options.get("session_name") or ""),
        connect_timeout=_number(options, "timeout", "ansible_ssh_timeout", 10.0),
        idle_timeout=_number(options, "persist_idle_timeout", "burrow_persist_idle_timeout", DEFAULT_IDLE_TIMEOUT),
        owner=(int(owner[0]), int(owner[1])) if owner else None,
    )


def via_hops(via: t.Any, host: str, defaults: dict[str, t.Any], ssh_config_file: str | None) -> list[Hop]:
    if isinstance(via, str):
        via = [via]
    if not via:
        return ssh_config_jumps(host, defaults, ssh_config_file)
    if not isinstance(via, (list, tuple)):
        raise SpecError("burrow_via", via, "must be a list of hops")
    hops: list[Hop] = []
    for index, entry in enumerate(via):
        field = f"burrow_via[{index}]"
        if isinstance(entry, str) and "," in entry:
            parts = [part.strip() for part in entry.split(",") if part.strip()]
            hops.extend(parse_hop(part, f"{field}[{sub}]", defaults) for sub, part in enumerate(parts))
        elif isinstance(entry, (str, dict)):
            hops.append(parse_hop(entry, field, defaults))
        else:
            raise SpecError(field, entry, "must be a string like user@host:port or a dict with a host key")
    return hops


def ssh_config_jumps(host: str, defaults: dict[str, t.Any], ssh_config_file: str | None) -> list[Hop]:
    """ProxyJump for the target from the OpenSSH client configuration, as ssh would resolve it."""
    path = os.path.expanduser(ssh_config_file or "")
    if not path or not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as handle:
        if "proxyjump" not in handle.read().lower():
            return []
    import paramiko

    config = paramiko.SSHConfig.from_path(path)
    jump = config.lookup(host).get("proxyjump")
    if not jump or jump.lower() == "none":
        return []
    hops = []
    for index, hop in enumerate(parse_jump_list(jump, "ProxyJump")):
        settings = config.lookup(hop.host)
        data: dict[str, t.Any] = {
            "host": settings.get("hostname", hop.host),
            "port": hop.port if hop.port != 22 else int(settings.get("port", 22)),
            "user": hop.user or settings.get("user"),
        }
        identities = settings.get("identityfile") or []
        if identities:
            data["private_key_file"] = identities[0]
        hops.append(parse_hop({key: value for key, value in data.items() if value is not None}, f"ProxyJump[{index}]", defaults))
    return hops
