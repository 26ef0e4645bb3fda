# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Desired state vs running state for the tunnel modules: decide, then act (unless in check mode)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError, TunnelError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import TunnelHandle, list_handles
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.lock import name_lock
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import (
    TunnelPaths,
    boot_id,
    check_state_dir,
    ensure_state_dir,
    process_start_time,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.spawn import spawn
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Tunnel


@dataclasses.dataclass
class Outcome:
    changed: bool
    action: str  # created | unchanged | updated | repaired | replaced | restarted | removed | absent
    report: dict[str, t.Any]
    diff: dict[str, str] | None = None


def _forward_keys(forwards: t.Iterable[dict[str, t.Any]]) -> list[str]:
    return [str(forward.get("key")) for forward in forwards]


def _render(spec: dict[str, t.Any] | None, forward_keys: list[str] | None) -> str:
    if spec is None:
        return ""
    view = {
        "name": spec.get("name"),
        "hops": [hop.get("label") or f"{hop.get('user') or ''}@{hop.get('host')}:{hop.get('port')}" for hop in spec.get("hops", [])],
        "forwards": forward_keys if forward_keys is not None else [forward.get("key") for forward in spec.get("forwards", [])],
    }
    return json.dumps(view, indent=2) + "\n"


def _desired_keys(tunnel: Tunnel) -> list[str]:
    return [forward.key() for forward in tunnel.forwards]


def _probes_differ(tunnel: Tunnel, running: t.Iterable[dict[str, t.Any]]) -> bool:
    """Probes are not part of a forward's key: a changed probe is applied live, like a changed forward."""
    return [forward.get("probe") for forward in running] != [forward.public_dict()["probe"] for forward in tunnel.forwards]


def wait_for_probes(state_dir: str, name: str, timeout: float, interval: float = 0.5) -> tuple[bool, list[dict[str, t.Any]], float]:
    """Probe every forward until all pass or ``timeout`` seconds have gone; (passed, the last results, seconds waited)."""
    handle = TunnelHandle(state_dir, name)
    started = time.monotonic()
    deadline = started + timeout
    results: list[dict[str, t.Any]] = []
    while True:
        remaining = deadline - time.monotonic()
        report = handle.inspect(probe=True, probe_timeout=max(remaining, 0.5))
        results = report.get("probe") or [{"ok": False, "error": f"tunnel {name} is {report.get('status')}: {report.get('reason') or 'no probe answer'}"}]
        if all(result.get("ok") for result in results):
            return True, results, round(time.monotonic() - started, 2)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False, results, round(time.monotonic() - started, 2)
        time.sleep(min(interval, remaining))


def summarize(report: dict[str, t.Any]) -> dict[str, t.Any]:
    """The `tunnel` return value: forwards grouped by kind, `port` = first forward's bound port."""
    forwards = report.get("forwards") or []
    grouped: dict[str, list[dict[str, t.Any]]] = {"local": [], "remote": [], "dynamic": []}
    for forward in forwards:
        entry = dict(forward)
        entry["listen_port"] = forward.get("bound_port")
        grouped.setdefault(str(forward.get("kind")), []).append(entry)
    first = forwards[0] if forwards else {}
    return {
        "name": report.get("name"),
        "status": report.get("status"),
        "pid": report.get("pid"),
        "port": first.get("bound_port"),
        "local_forwards": grouped["local"],
        "remote_forwards": grouped["remote"],
        "dynamic_forwards": grouped["dynamic"],
        "reconnects": report.get("reconnects", 0),
        "warnings": report.get("warnings", []),
        "hops": report.get("hops") or [],
        "cipher": report.get("cipher"),
        "log": report.get("log"),
    }


def ensure_present(
    tunnel: Tunnel,
    state_dir: str,
    raw_forwards: dict[str, t.Any],
    *,
    check_mode: bool,
    owner: dict[str, t.Any] | None,
    restart: bool = False,
    drain_timeout: float = 10.0,
) -> Outcome:
    """Inspect, then create / replace / update, under the name's lock (check mode only reads, without it)."""
    if not check_mode:
        state_dir = ensure_state_dir(state_dir)
    with contextlib.nullcontext() if check_mode else name_lock(TunnelPaths(state_dir, tunnel.name)):
        return _decide_and_act(tunnel, state_dir, raw_forwards, check_mode, owner, restart, drain_timeout)


def _decide_and_act(
    tunnel: Tunnel, state_dir: str, raw_forwards: dict[str, t.Any], check_mode: bool, owner: dict[str, t.Any] | None, restart: bool, drain_timeout: float
) -> Outcome:
    handle = TunnelHandle(state_dir, tunnel.name)
    current = handle.inspect()
    desired_keys = _desired_keys(tunnel)
    before = _render(current.get("spec"), _forward_keys(current.get("forwards", []))) if current["status"] not in ("absent",) else ""
    after = _render(tunnel.public_dict(), desired_keys)
    diff = {"before": before, "after": after, "before_header": f"tunnel {tunnel.name} (running)", "after_header": f"tunnel {tunnel.name} (declared)"}

    if current["status"] == "absent":
        action = "created"
    elif restart:
        action = "restarted"
    elif current["status"] in ("stale", "down"):
        action = "repaired"
    elif current.get("digest") != tunnel.digest():
        action = "replaced"
    elif _forward_keys(current.get("forwards", [])) != desired_keys or _probes_differ(tunnel, current.get("forwards", [])):
        action = "updated"
    else:
        if not check_mode:
            # Declared again as it runs: restart its idle count (idle_timeout counts from the last use, this included).
            with contextlib.suppress(TunnelError, OSError):
                handle.request("touch", timeout=5)
        return Outcome(False, "unchanged", current)

    if check_mode:
        predicted = dict(current) if action == "updated" else {"name": tunnel.name, "status": "up" if action != "created" else "absent", "forwards": []}
        return Outcome(True, action, predicted, diff)

    if action == "updated":
        response = handle.request("apply", **raw_forwards)
        report = response["status"]
        report.update(pid=handle.pid, log=handle.paths.log)
        return Outcome(True, action, report, diff)
    if action != "created":
        handle.stop(deadline=drain_timeout)
    report = spawn(tunnel, state_dir, owner=owner)
    return Outcome(True, action, report, diff)


def ensure_absent(name: str, state_dir: str, *, check_mode: bool, drain_timeout: float = 10.0) -> Outcome:
    """Stop one tunnel, or every tunnel of this user on this host when name is '*'."""
    handles = list_handles(state_dir) if name == "*" else [TunnelHandle(state_dir, name)]
    present = [handle for handle in handles if handle.exists]
    if not present:
        return Outcome(False, "absent", {"name": name, "status": "absent", "removed": []})
    before = "".join(_render((handle.state or {}).get("spec") or {"name": handle.name}, None) for handle in present)
    diff = {"before": before, "after": "", "before_header": f"tunnel {name} (running)", "after_header": f"tunnel {name} (absent)"}
    cut = 0
    if not check_mode and check_state_dir(state_dir):
        for handle in present:
            with name_lock(handle.paths):
                current = TunnelHandle(state_dir, handle.name)  # read again: another run may have replaced it
                current.stop(deadline=drain_timeout)
                cut += current.cut_connections
    report = {"name": name, "status": "absent", "removed": [handle.name for handle in present], "cut_connections": cut}
    return Outcome(True, "removed", report, diff)


def owner_for(params: dict[str, t.Any]) -> dict[str, t.Any] | None:
    """The process a lifetime=play tunnel watches; it must be on this host (the controller)."""
    if params.get("lifetime") != "play":
        return None
    owner = params.get("lifetime_owner") or {}
    pid = owner.get("pid")
    if not isinstance(pid, int) or owner.get("boot_id") != boot_id() or process_start_time(pid) != owner.get("start_time"):
        raise SpecError(
            "lifetime",
            "play",
            "lifetime=play needs the tunnel to run on the controller (delegate_to: localhost) so it can follow the ansible-playbook "
            "process; on other hosts use ttl or idle_timeout",
        )
    return {"pid": pid, "start_time": owner.get("start_time")}
