# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The one chain builder: connect to a target hop by hop (TCP to the first, a direct-tcpip channel of each hop to
the next), verifying every hop's host key. The tunnel process opens whole chains; the connection plugin's broker
extends chains it already holds, so hosts behind one bastion share its transport.
"""

from __future__ import annotations

import dataclasses
import socket
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import ForwardRefused, TunnelError, Unreachable
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import DEFAULT_CONNECT_TIMEOUT, Hop
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.auth import authenticate
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.config import SshConfig
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.hostkeys import (
    hop_known_hosts_name,
    load_hop_known_hosts,
    preferred_key_types,
    verify_host_key,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.proxy import ProxySocket, open_proxy_socket
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import (
    OPEN_FAILURE_REASONS,
    QUICKACK_OPTION,
    BurrowTransport,
    QuickAckSocket,
    paramiko,
)


@dataclasses.dataclass
class Chain:
    """The transports of one connection: one per hop, the last one reaches the target server."""

    hops: tuple[Hop, ...]
    transports: list[t.Any]

    @property
    def target(self) -> t.Any:
        return self.transports[-1]

    def is_active(self) -> bool:
        return bool(self.transports) and all(transport.is_active() for transport in self.transports)

    def close(self) -> None:
        for transport in reversed(self.transports):
            try:
                transport.close()
            except Exception:  # closing must never raise
                pass


def _tcp_socket(hop: Hop, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((hop.host, hop.port), timeout=timeout)
    except socket.gaierror as exc:
        raise Unreachable(f"cannot resolve {hop.host} (hop {hop.label()}): {exc.strerror}", advice="check the host name and DNS", hop=hop.label()) from exc
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, socket.timeout):
            reason = f"no answer within {timeout:g} s"
        raise Unreachable(f"cannot connect to {hop.label()}: {reason}", advice="check that sshd runs there and that the port is open", hop=hop.label()) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    if QUICKACK_OPTION:  # Linux
        sock = QuickAckSocket(fileno=sock.detach())
    return sock


def _channel_to_next_hop(previous: t.Any, previous_hop: Hop, hop: Hop, timeout: float) -> t.Any:
    try:
        channel = previous.open_channel("direct-tcpip", (hop.host, hop.port), ("127.0.0.1", 0), timeout=timeout)
    except paramiko.ChannelException as exc:
        reason = OPEN_FAILURE_REASONS.get(exc.code, exc.text)
        if exc.code == 1:
            raise ForwardRefused(
                f"jump host {previous_hop.label()} refused to connect to the next hop {hop.label()}: {reason}",
                advice="that sshd's AllowTcpForwarding / PermitOpen / DisableForwarding forbid it; " + "burrow.ssh.sshd_forwarding can change them",
                hop=previous_hop.label(),
            ) from exc
        raise Unreachable(f"jump host {previous_hop.label()} cannot reach the next hop {hop.label()}: {reason}", hop=hop.label()) from exc
    except paramiko.SSHException as exc:
        raise Unreachable(f"jump host {previous_hop.label()} did not open a channel to {hop.label()}: {exc}", hop=hop.label()) from exc
    return channel


def _handshake(sock: t.Any, hop: Hop, timeout: float) -> tuple[t.Any, list[str]]:
    transport = BurrowTransport(sock)
    transport.banner_timeout = timeout
    transport.auth_timeout = timeout
    transport.handshake_timeout = timeout
    if hop.compression:
        transport.use_compression(True)
    if not hop.host_key_fingerprint and hop.host_key_policy != "off":
        types = preferred_key_types(load_hop_known_hosts(hop), hop_known_hosts_name(hop))
        supported = [name for name in types if name in transport.get_security_options().key_types]
        if supported:
            transport.get_security_options().key_types = supported
    try:
        transport.start_client(timeout=timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        transport.close()
        detail = sock.failure() if isinstance(sock, ProxySocket) else ""
        sock.close()  # paramiko leaves it open when the handshake never started
        if detail:
            raise Unreachable(
                f"SSH handshake with {hop.label()} through its ProxyCommand failed: {exc or type(exc).__name__}; {detail}",
                advice="run the ProxyCommand by hand to see whether it reaches an SSH server",
                hop=hop.label(),
            ) from exc
        raise Unreachable(
            f"SSH handshake with {hop.label()} failed: {exc or type(exc).__name__}", advice="is an SSH server listening there?", hop=hop.label()
        ) from exc
    try:
        warnings = verify_host_key(transport, hop)
        authenticate(transport, hop)
        transport.settle()
    except BaseException:
        transport.close()
        sock.close()
        raise
    return transport, warnings


def compression_warning(labels: t.Sequence[str]) -> str:
    return (
        f"compression is on for {', '.join(labels)}, whose connection carries forwarded traffic: compressing data an attacker can "
        "influence together with secrets may leak information about them (OpenSSH's advice); turn it off unless the link is slow and the traffic trusted"
    )


class ChainBuilder:
    """Resolves hops through one ssh_config and connects them; the only place a hop chain is built."""

    def __init__(self, connect_timeout: float | None = None, ssh_config: SshConfig | None = None) -> None:
        # None: each hop's ConnectTimeout from the ssh_config, else DEFAULT_CONNECT_TIMEOUT (an explicit value wins).
        self.connect_timeout = float(connect_timeout) if connect_timeout is not None else None
        self.ssh_config = ssh_config if ssh_config is not None else SshConfig.load()

    def resolve(self, hops: t.Sequence[Hop]) -> list[Hop]:
        """The hops to connect, with the ssh_config applied (HostName, User, Port, keys; ProxyJump of a lone target)."""
        return self.ssh_config.resolve(hops)

    def open(self, hops: t.Sequence[Hop]) -> tuple[Chain, list[str]]:
        """Resolve and connect every hop; on failure nothing stays open. Returns the chain and host-key warnings."""
        resolved = self.resolve(hops)
        chain = Chain(hops=tuple(resolved), transports=[])
        warnings: list[str] = []
        try:
            for hop in resolved:
                previous = (chain.transports[-1], chain.hops[len(chain.transports) - 1]) if chain.transports else None
                transport, hop_warnings = self.extend(previous, hop)
                chain.transports.append(transport)
                warnings.extend(hop_warnings)
        except BaseException:
            chain.close()
            raise
        return chain, warnings

    def timeout_for(self, hop: Hop) -> float:
        if self.connect_timeout is not None:
            return self.connect_timeout
        return float(hop.connect_timeout or DEFAULT_CONNECT_TIMEOUT)

    def extend(self, previous: tuple[t.Any, Hop] | None, hop: Hop) -> tuple[t.Any, list[str]]:
        """One more authenticated transport: to ``hop`` directly, or through ``previous`` (its transport and hop)."""
        timeout = self.timeout_for(hop)
        try:
            if previous is None and hop.proxy_command:
                sock: t.Any = open_proxy_socket(hop)
            elif previous is None:
                sock = _tcp_socket(hop, timeout)
            else:
                sock = _channel_to_next_hop(previous[0], previous[1], hop, timeout)
            return _handshake(sock, hop, timeout)
        except TunnelError:
            raise
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise Unreachable(f"connection to {hop.label()} failed: {exc or type(exc).__name__}", hop=hop.label()) from exc
