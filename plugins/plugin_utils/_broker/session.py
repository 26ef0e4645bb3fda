# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""A burrow.ssh.tunneled connection's options turned into a validated hop chain and forwards (in the session broker).

The worker sends its raw options and the broker validates them here, with the tunnel module's grammar (hops,
forwards) and the engine's ssh_config reader: the parser and paramiko are already loaded in the broker, while a
worker would compile them again for every task. Errors are SpecErrors naming the host variable
(``burrow_via[1].port``), which the plugin raises as option errors.
"""

from __future__ import annotations

import dataclasses
import math
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import AUDIT_SINKS, loopback_policy, parse_forward_fields, split_via
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.forms import parse_hop, validate_proxy_command
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import DEFAULT_CONNECT_TIMEOUT, Forward, Hop
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.validate import validate_choice
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.config import SshConfig

HOST_KEY_CHECKING_WORDS = {"true": "strict", "yes": "strict", "on": "strict", "1": "strict", "false": "off", "no": "off", "0": "off"}
DEFAULT_IDLE_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class Session:
    hops: tuple[Hop, ...]
    name: str
    # None: each hop's ConnectTimeout from the ssh_config, else DEFAULT_CONNECT_TIMEOUT.
    connect_timeout: float | None
    idle_timeout: float
    owner: tuple[int, int] | None
    # The target's commands get the controller's agent (burrow_forward_agent, else ForwardAgent of the target).
    forward_agent: bool = False
    # burrow_persist: seconds the session outlives the last ansible-playbook that used it (0: it ends with the run).
    persist: float = 0.0

    @property
    def effective_connect_timeout(self) -> float:
        return float(self.connect_timeout or DEFAULT_CONNECT_TIMEOUT)

    @property
    def label(self) -> str:
        *via, target = self.hops
        return target.label() + (" via " + ", ".join(hop.label() for hop in via) if via else "")


def host_key_checking(value: t.Any) -> str | None:
    """The policy from the option's words; None when unset (the ssh_config's StrictHostKeyChecking, else strict)."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    text = HOST_KEY_CHECKING_WORDS.get(text, text)
    if text not in ("strict", "accept-new", "off"):
        raise SpecError("burrow_host_key_checking", value, "must be strict, accept-new or off (or a boolean)")
    return text


def _number(options: t.Mapping[str, t.Any], key: str, field: str, default: float | None) -> float | None:
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


def _persist(value: t.Any) -> float:
    if value is None or value == "":
        return 0.0
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpecError("burrow_persist", value, "must be a number of seconds (0: sessions end with the run)") from None
    if not math.isfinite(number) or number < 0:
        raise SpecError("burrow_persist", value, "must be 0 (sessions end with the run) or a positive number of seconds")
    return number


def build_session(options: t.Mapping[str, t.Any]) -> Session:
    """The hop chain (jump hosts, then the target) and session settings from the plugin's options.

    The chain goes through the same ssh_config reader as a tunnel's: an alias works as ansible_host, and the
    target's ProxyJump is used when burrow_via is unset.
    """
    defaults: dict[str, t.Any] = {
        "user": options.get("remote_user"),
        "private_key_file": options.get("private_key_file"),
        "private_key_passphrase": options.get("private_key_passphrase"),
        "use_agent": options.get("use_agent"),
        "host_key_checking": host_key_checking(options.get("host_key_checking")),
        "known_hosts_file": options.get("known_hosts_file"),
        "certificate_file": options.get("certificate_file"),
        "compression": options.get("compression"),
    }
    defaults = {key: value for key, value in defaults.items() if value is not None and value != ""}
    via = [parse_hop(entry, field, defaults) for field, entry in split_via(options.get("via"), "burrow_via") if _is_hop(entry, field)]
    target_data: dict[str, t.Any] = {"host": str(options.get("remote_addr")), "port": options.get("port")}
    for key in ("password", "host_key_fingerprint"):
        if options.get(key):
            target_data[key] = options[key]
    target = parse_hop(target_data, "ansible_host", defaults)
    if options.get("proxy_command"):
        # burrow_proxy_command carries the connection to the first hop of the chain, as the tunnel's proxy_command.
        if via and via[0].proxy_command is None:
            via[0] = dataclasses.replace(via[0], proxy_command=validate_proxy_command(options["proxy_command"], "burrow_proxy_command"))
        elif not via:
            target = dataclasses.replace(target, proxy_command=validate_proxy_command(options["proxy_command"], "burrow_proxy_command"))
    ssh_config = SshConfig.load(str(options.get("ssh_config_file") or ""))
    owner = options.get("owner")
    hops = tuple(ssh_config.resolve([*via, target]))
    forward_agent = options.get("forward_agent")
    if forward_agent is None:
        forward_agent = bool(hops[-1].forward_agent)
    return Session(
        hops=hops,
        name=str(options.get("session_name") or ""),
        connect_timeout=_number(options, "timeout", "ansible_ssh_timeout", None),
        idle_timeout=_number(options, "persist_idle_timeout", "burrow_persist_idle_timeout", DEFAULT_IDLE_TIMEOUT) or DEFAULT_IDLE_TIMEOUT,
        owner=(int(owner[0]), int(owner[1])) if owner else None,
        forward_agent=bool(forward_agent),
        persist=_persist(options.get("persist")),
    )


def _is_hop(entry: t.Any, field: str) -> bool:
    if isinstance(entry, (str, dict)):
        return True
    raise SpecError(field, entry, "must be a string like user@host:port or a dict with a host key")


FORWARD_OPTIONS = (("burrow_local_forwards", "local"), ("burrow_remote_forwards", "remote"), ("burrow_reverse_socks", "reverse_socks"))


ALLOW_NON_LOOPBACK_BIND = "burrow_allow_non_loopback_bind"


def connection_audit_sink(declared: t.Mapping[str, t.Any]) -> str:
    """burrow_audit: where the audit lines of the connection's forwards go (file when unset)."""
    sink = declared.get("audit")
    return "file" if sink is None else validate_choice(sink, "burrow_audit", AUDIT_SINKS)


def parse_connection_forwards(declared: t.Mapping[str, t.Any]) -> tuple[list[Forward], list[str]]:
    """The connection's forwards from its three host variables, and the bind policy's warnings.

    Raises SpecError naming the variable and index; a listener beyond loopback is refused unless
    burrow_allow_non_loopback_bind is true, the tunnel module's policy (the same function).
    """
    names = {"burrow_local_forwards": "local", "burrow_remote_forwards": "remote", "burrow_reverse_socks": "reverse_socks"}
    fields = parse_forward_fields([(option, kind, declared.get(names[option])) for option, kind in FORWARD_OPTIONS])
    allow = declared.get("allow_non_loopback_bind")
    if allow is None:
        allow = False
    if not isinstance(allow, bool):
        raise SpecError(ALLOW_NON_LOOPBACK_BIND, allow, "must be true or false")
    return [forward for _field, forward in fields], loopback_policy(fields, allow, ALLOW_NON_LOOPBACK_BIND)
