# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Agent forwarding for the connection plugin (ssh -A): the broker relays the target's agent channels to the worker's agent.

paramiko's AgentRequestHandler connects to the $SSH_AUTH_SOCK of the process it runs in; the broker is a process of
its own, started by whichever worker came first, so the socket comes with each exec request (a path, not a secret)
and every auth-agent@openssh.com channel the server opens is relayed to it, on a thread of its own (paramiko calls
the handler on its transport thread, which must not block).
"""

from __future__ import annotations

import logging
import socket
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.relay import Counters, relay, start_thread

LOG = logging.getLogger("burrow.broker")


def _serve(channel: t.Any, socket_path: str) -> None:
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        agent.settimeout(10)
        agent.connect(socket_path)
        agent.settimeout(None)
    except OSError as exc:
        LOG.warning("cannot reach the forwarded agent at %s: %s", socket_path, exc)
        agent.close()
        channel.close()
        return
    relay(agent, channel, Counters())


def request_agent_forwarding(channel: t.Any, socket_path: str) -> None:
    """Ask for auth-agent-req@openssh.com on a session channel before its exec; agent channels go to ``socket_path``.

    The handler belongs to the transport: sessions sharing it that forward too use the socket of the latest request
    (every worker of one ansible-playbook run has the same one). The server opens agent channels only for the
    sessions that asked, so a session without forwarding on the same transport gets none.
    """

    def handler(agent_channel: t.Any) -> None:
        start_thread(_serve, agent_channel, socket_path, name="burrow-agent")

    channel.request_forward_agent(handler)
