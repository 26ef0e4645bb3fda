# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A stand-in for a stdio ProxyCommand such as AWS SSM's: connects its stdin and stdout to HOST:PORT.

Usage: stdio_relay.py LOG HOST PORT [WORDS...]; the words (the expanded tokens) and the pid are written to LOG.
"""

from __future__ import annotations

import os
import socket
import sys
import threading


def main() -> int:
    log, host, port, *words = sys.argv[1:]
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()} {' '.join(words)}\n")
    sock = socket.create_connection((host, int(port)))

    def upstream() -> None:
        while True:
            data = os.read(0, 65536)
            if not data:
                break
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)

    threading.Thread(target=upstream, daemon=True).start()
    while True:
        data = sock.recv(65536)
        if not data:
            return 0
        os.write(1, data)


if __name__ == "__main__":
    sys.exit(main())
