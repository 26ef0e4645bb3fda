# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sshd_forwarding's reload check sees the re-exec of an sshd that runs in another network namespace."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import typing as t

import pytest

from ansible_collections.burrow.ssh.plugins.module_utils._sshd.sshd import listen_socket_inodes, sighup_and_wait

pytestmark = pytest.mark.needs_root


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def test_reload_of_an_sshd_in_another_network_namespace_is_seen(sandbox: t.Any) -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    name = f"burrow-sr-{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    sshd = None
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        sshd = sandbox.start_sshd(name="nsreload", netns=name, listen="127.0.0.1")
        # Its listener exists only in that namespace: /proc/net/tcp of ours does not list it, /proc/PID/net/tcp does.
        before = listen_socket_inodes(sshd.pid)
        assert before, "the listener of an sshd in another namespace was not found"
        assert sighup_and_wait(sshd.pid, timeout=20) is True
        assert listen_socket_inodes(sshd.pid) - before
    finally:
        if sshd is not None:
            sshd.stop()
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=30)
