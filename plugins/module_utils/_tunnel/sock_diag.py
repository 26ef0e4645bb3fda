# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The owner (uid, inode) of one local TCP socket, asked of the kernel by its addresses (netlink NETLINK_SOCK_DIAG).

/proc/net/tcp lists every TCP socket of the network namespace, so finding one there costs a read of the whole table:
measured 1.0 ms with an empty table, 2.5 ms with 2000 sockets and 5.9 ms with 4000, for each accepted connection,
which made a burst of 1000 connections quadratic. An exact sock_diag request (no dump: the kernel looks the socket up
by its four-tuple, as it does for an incoming segment) answers in one round trip whatever the table holds. Linux
only; unprivileged processes may ask (the answer carries the uid and inode, as /proc/net/tcp shows them to anyone).
"""

from __future__ import annotations

import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
ALL_STATES = 0xFFFFFFFF
TIMEOUT = 1.0

NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
# inet_diag_req_v2 (family, protocol, extensions, pad, states) and its inet_diag_sockid (ports and addresses in network
# byte order, interface, cookie).
REQUEST = struct.Struct("=BBBBI2s2s16s16sIII")
# inet_diag_msg: family, state, timer, retransmits, the sockid, expires, rqueue, wqueue, uid, inode.
RESPONSE = struct.Struct("=BBBB2s2s16s16sIIIIIIII")


def _packed(family: int, host: str) -> bytes:
    return socket.inet_pton(family, host).ljust(16, b"\0")


def socket_owner(local: tuple[str, int], remote: tuple[str, int]) -> tuple[int, str] | None:
    """(uid, inode) of the TCP socket bound to ``local`` and connected to ``remote`` (plain, not v4-mapped, addresses).

    None when the kernel has no such socket (it closed in between). Raises OSError when sock_diag cannot be asked (not
    Linux, no netlink, an address that is not one), for the caller to fall back to /proc/net/tcp.
    """
    family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
    request = REQUEST.pack(
        family,
        socket.IPPROTO_TCP,
        0,
        0,
        ALL_STATES,
        struct.pack(">H", local[1]),
        struct.pack(">H", remote[1]),
        _packed(family, local[0]),
        _packed(family, remote[0]),
        0,
        INET_DIAG_NOCOOKIE,
        INET_DIAG_NOCOOKIE,
    )
    # One request on its own socket: the sequence number has nothing to match.
    message = NLMSG_HEADER.pack(NLMSG_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + request
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(TIMEOUT)
        sock.sendto(message, (0, 0))
        answer = sock.recv(8192)
    if len(answer) < NLMSG_HEADER.size + RESPONSE.size:
        return None  # an NLMSG_ERROR (ENOENT: no such socket) is shorter than an answer
    kind = NLMSG_HEADER.unpack_from(answer)[1]
    if kind != SOCK_DIAG_BY_FAMILY:
        return None
    fields = RESPONSE.unpack_from(answer, NLMSG_HEADER.size)
    return int(fields[-2]), str(fields[-1])
