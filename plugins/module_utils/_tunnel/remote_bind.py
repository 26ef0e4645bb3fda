# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Where the server really bound a remote forward: sshd does not say, so it is measured from the server itself.

sshd's GatewayPorts decides, not the request: ``no`` binds loopback whatever was asked, ``yes`` binds every address
(0.0.0.0 and [::]) whatever was asked, even ``127.0.0.1``; only ``clientspecified`` honours the address. So after every
granted ``tcpip-forward`` with a specific address the engine opens a ``direct-tcpip`` channel from the server to an
address the request did not cover, on the bound port, and watches whether the server's own listener hands that
connection back to us as a ``forwarded-tcpip`` channel (not merely whether something accepts it):

* a loopback request is probed at a non-loopback address of the server: the target hop's address, resolved by the
  server itself. A server reached on a loopback address (or whose address is NATed away from it) cannot be checked
  this way; that is logged, not guessed;
* a non-loopback request is probed at that address (is it bound at all?) and then at 127.0.0.1 (is it wider?).
"""

from __future__ import annotations

import logging
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SSHD_FORWARDING_HINT, ExposedListener
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.validate import is_loopback
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import paramiko

if t.TYPE_CHECKING:
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.forwards import ForwardRuntime

LOG = logging.getLogger("burrow.tunnel")
WILDCARDS = ("", "*", "0.0.0.0", "::")
# What a wider bind than asked is reported as: every address of the server, both families (sshd's wildcard bind).
ALL_ADDRESSES = "*"


def reaches(runtime: ForwardRuntime, transport: t.Any, address: str, port: int) -> bool | None:
    """Whether a connection from the server to address:port comes back through this forward (None: cannot tell)."""
    owner = runtime.owner
    timeout = max(owner.connect_timeout, 5.0)
    probe_done = owner.expect_probe(port)
    try:
        channel = transport.open_channel("direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=timeout)
    except paramiko.ChannelException as exc:
        owner.cancel_probe(port)
        # 1: administratively prohibited (AllowTcpForwarding remote, PermitOpen): the server would not try.
        return None if exc.code == 1 else False
    except paramiko.SSHException:
        owner.cancel_probe(port)
        return None
    try:
        return probe_done.wait(timeout)
    finally:
        owner.cancel_probe(port)
        channel.close()


def _warn(runtime: ForwardRuntime, message: str) -> None:
    runtime.warnings.append(message)
    LOG.warning("%s", message)


def _server_address(runtime: ForwardRuntime) -> str | None:
    chain = runtime.owner.chain
    if chain is None or not chain.hops:
        return None
    host = str(chain.hops[-1].host)
    return None if is_loopback(host) else host


def verify_remote_bind(runtime: ForwardRuntime, transport: t.Any, host: str, port: int, allow_non_loopback_bind: bool) -> str:
    """The host the server really listens on for a granted request of host:port; warns, or refuses an exposure."""
    if host in WILDCARDS:
        return host
    label = runtime.owner.target_label
    if is_loopback(host):
        address = _server_address(runtime)
        if address is None:
            LOG.info("%s: exposure of %s not verified: the server is reached on a loopback address", runtime.key, host)
            return host
        reached = reaches(runtime, transport, address, port)
        if reached is None:
            LOG.info("%s: exposure not verified: server %s refuses direct-tcpip to %s:%s", runtime.key, label, address, port)
        if not reached:
            return host
        if not allow_non_loopback_bind:
            runtime.cancel_remote(transport)
            runtime.bound = None
            raise ExposedListener(
                f"server {label} listens on every address for remote forward {runtime.key}, not only on {host}: it answered on "
                f"{address}:{port}, so the forward would be reachable from other machines (sshd's GatewayPorts is 'yes')",
                advice=f"set GatewayPorts clientspecified or no on the server ({SSHD_FORWARDING_HINT}), or set allow_non_loopback_bind=true "
                "if exposing the forward is intended",
            )
        message = (
            f"server {label} bound remote forward {runtime.key} on every address, not only {host} (reachable at {address}:{port}): "
            f"sshd's GatewayPorts is 'yes'; set GatewayPorts clientspecified to get what is asked ({SSHD_FORWARDING_HINT})"
        )
        _warn(runtime, message)
        return ALL_ADDRESSES
    if not reaches(runtime, transport, host, port):
        message = (
            f"server {label} bound remote forward {runtime.key} to loopback, not {host}: sshd's GatewayPorts is 'no'; "
            f"set GatewayPorts clientspecified ({SSHD_FORWARDING_HINT})"
        )
        _warn(runtime, message)
        return "127.0.0.1"
    if reaches(runtime, transport, "127.0.0.1", port):
        message = (
            f"server {label} bound remote forward {runtime.key} on every address, not only {host}: sshd's GatewayPorts is 'yes'; "
            f"set GatewayPorts clientspecified to get what is asked ({SSHD_FORWARDING_HINT})"
        )
        _warn(runtime, message)
        return ALL_ADDRESSES
    return host
