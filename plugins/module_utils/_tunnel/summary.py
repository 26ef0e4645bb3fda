# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""One line a person reads at a glance for a tunnel report: name, status, listeners, destinations, age, use, last error."""

from __future__ import annotations

import contextlib
import datetime
import time
import typing as t


def _age(seconds: float) -> str:
    """45s, 12m, 2h5m, 3d4h."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        return f"{whole // 3600}h{(whole % 3600) // 60}m"
    return f"{whole // 86400}d{(whole % 86400) // 3600}h"


def _endpoint(host: t.Any, port: t.Any, path: t.Any) -> str:
    if path:
        return str(path)
    host_text = "*" if host in ("", None) and port is not None else str(host)
    if ":" in host_text:
        host_text = f"[{host_text}]"
    return f"{host_text}:{port}"


def _forward(forward: t.Mapping[str, t.Any]) -> str:
    kind = forward.get("kind")
    bound_port = forward.get("bound_port")
    listen = _endpoint(
        forward.get("bound_host") or forward.get("listen_host"),
        bound_port or forward.get("listen_port"),
        forward.get("bound_path") or forward.get("listen_path"),
    )
    if forward.get("dest_host") is not None or forward.get("dest_path"):
        target = _endpoint(forward.get("dest_host"), forward.get("dest_port"), forward.get("dest_path"))
    else:
        target = "SOCKS"
    arrow = {"local": "-L", "remote": "-R", "dynamic": "-D"}.get(str(kind), str(kind))
    where = " (on the server)" if kind == "remote" else ""
    return f"{arrow} {listen}{where} -> {target}"


def _bytes(count: int) -> str:
    """512 B, 12.3 kB, 4.0 MB (decimal units)."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"  # pragma: no cover - the loop always returns


def _audit(audit: t.Any, now: float) -> str:
    """``used by root (3, 12.0 kB), nobody (1, 300 B), last 2m ago``: who connected (audit.py), from the audit summary."""
    if not isinstance(audit, dict) or not audit.get("by_uid"):
        return ""
    users = []
    for usage in audit["by_uid"]:
        who = usage.get("user") or (f"uid {usage['uid']}" if usage.get("uid") is not None else "non-local")
        users.append(f"{who} ({usage.get('connections', 0)}, {_bytes(int(usage.get('bytes_out', 0)) + int(usage.get('bytes_in', 0)))})")
    line = "used by " + ", ".join(users)
    latest = max(str(usage.get("last_use") or "") for usage in audit["by_uid"])
    with contextlib.suppress(ValueError):
        line += f", last {_age(now - datetime.datetime.fromisoformat(latest.replace('Z', '+00:00')).timestamp())} ago"
    return line


def describe(report: t.Mapping[str, t.Any], now: float | None = None) -> str:
    """``appdb: up 2h5m via ops@bastion:22; -L 127.0.0.1:43512 -> db.internal:5432; 3 connections (1 active); used by root (3, 12.0 kB), last 2m ago``"""
    now = time.time() if now is None else now
    name = report.get("name", "?")
    status = str(report.get("status", "unknown"))
    parts = [f"{name}: {status}"]
    started = report.get("started_at")
    if isinstance(started, (int, float)) and status not in ("absent", "stale"):
        parts[0] += f" {_age(now - float(started))}"
    hops = report.get("hops") or [hop.get("label") for hop in (report.get("spec") or {}).get("hops", []) if isinstance(hop, dict)]
    if hops:
        parts[0] += " via " + " -> ".join(str(hop) for hop in hops)
    forwards = report.get("forwards") or []
    parts.extend(_forward(forward) for forward in forwards)
    if forwards:
        total = sum(int(forward.get("connections_total") or 0) for forward in forwards)
        active = sum(int(forward.get("connections_active") or 0) for forward in forwards)
        parts.append(f"{total} connection{'s' if total != 1 else ''} ({active} active)")
    used = _audit(report.get("audit"), now)
    if used:
        parts.append(used)
    if report.get("reconnects"):
        parts.append(f"{report['reconnects']} reconnect(s)")
    error = report.get("last_error")
    if isinstance(error, dict) and error.get("message"):
        parts.append(f"last error: {error['message']}")
    if report.get("reason"):
        parts.append(str(report["reason"]))
    return "; ".join(parts)
