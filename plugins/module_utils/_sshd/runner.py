# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The sshd_forwarding module's run: edit the file, validate, move it in place, reload, confirm with ``sshd -T``.

The Ansible side of the package: it drives an AnsibleModule; model.py and sshd.py do the work without Ansible.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, List, NoReturn, Optional

from ansible.module_utils.basic import AnsibleModule

from .model import CANONICAL, SshdConfig, SshdConfigError, derive_connection_spec, normalise_value, render_value
from .sshd import DEFAULT_PID_FILE, ValidationError, effective_values, find_sshd, pid_alive, read_pid, sighup_and_wait, validate_file

# Module option name -> sshd keyword (lower case).
OPTION_KEYWORDS: Dict[str, str] = {
    "gateway_ports": "gatewayports",
    "allow_tcp_forwarding": "allowtcpforwarding",
    "allow_stream_local_forwarding": "allowstreamlocalforwarding",
    "permit_open": "permitopen",
    "permit_listen": "permitlisten",
    "disable_forwarding": "disableforwarding",
    "allow_agent_forwarding": "allowagentforwarding",
    "client_alive_interval": "clientaliveinterval",
    "client_alive_count_max": "clientalivecountmax",
}


def _systemd_running() -> bool:
    return os.path.isdir("/run/systemd/system")


class _Runner:
    """One run of the sshd_forwarding module."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params: Dict[str, Any] = module.params
        self.warnings: List[str] = []
        self.result: Dict[str, object] = {"changed": False}

    def fail(self, msg: str, **extra: object) -> NoReturn:
        out: Dict[str, Any] = dict(self.result)
        out.update(extra)
        if self.warnings:
            out["sshd_warnings"] = list(self.warnings)
        self.module.fail_json(msg=msg, **out)

    # .. settings ..................................................................................

    def settings(self) -> Dict[str, object]:
        out: Dict[str, object] = {}
        for option, keyword in OPTION_KEYWORDS.items():
            value = self.params.get(option)
            if value is not None:
                out[keyword] = value
        return out

    def run(self) -> None:
        config_file = str(self.params["config_file"])
        match = self.params.get("match")
        match_str = str(match) if match else None
        check_mode = self.module.check_mode
        settings = self.settings()
        self.result.update({"config_file": config_file, "match": match_str, "changes": [], "effective": {}, "reloaded": False})
        sshd = find_sshd(self.params.get("sshd_binary"))
        if sshd is None and (self.params.get("validate") or settings):
            self.fail("sshd binary not found in /usr/sbin, /usr/local/sbin or PATH; set sshd_binary")
        if not os.path.isfile(config_file):
            self.fail(f"{config_file} does not exist")
        try:
            config = SshdConfig.load(config_file)
            before = config.render()
            changes = []
            for keyword, value in settings.items():
                change, warnings = config.set(keyword, value, match_str)
                changes.append(change.as_dict())
                self.warnings.extend(warnings)
        except SshdConfigError as exc:
            self.fail(str(exc))
        after = config.render()
        changed = after != before
        self.result["changes"] = [c for c in changes if c["action"] != "unchanged"]
        self.result["changed"] = changed
        if changed and self.module._diff:
            self.result["diff"] = {
                "before": before,
                "after": after,
                "before_header": f"{config_file} (content)",
                "after_header": f"{config_file} (content)",
            }
        candidate = None
        try:
            if changed:
                candidate = self.write_candidate(config_file, after, check_mode)
                if self.params.get("validate") and sshd:  # sshd is there: without it, validate=true failed above
                    self.validate(sshd, candidate, config_file)
                if not check_mode:
                    if self.params.get("backup"):
                        self.result["backup_file"] = self.module.backup_local(config_file)
                    self.module.atomic_move(candidate, config_file)
                    candidate = None
            elif self.params.get("force_reload") and self.params.get("validate") and sshd:
                self.validate(sshd, config_file, config_file)
            want_reload = (changed or bool(self.params.get("force_reload"))) and bool(self.params.get("reload"))
            if want_reload and not check_mode:
                self.reload(sshd, config_file)
                self.result["changed"] = True
            if settings and sshd:
                self.confirm(sshd, candidate or config_file, settings, match_str)
        finally:
            if candidate and os.path.exists(candidate):
                os.unlink(candidate)
        if self.warnings:
            self.result["sshd_warnings"] = list(self.warnings)
            for warning in self.warnings:
                self.module.warn(warning)
        self.module.exit_json(**self.result)

    def write_candidate(self, config_file: str, text: str, check_mode: bool) -> str:
        directory = self.module.tmpdir if check_mode else os.path.dirname(os.path.abspath(config_file))
        fd, path = tempfile.mkstemp(dir=directory, prefix=".sshd_config.", suffix=".burrow")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        try:
            os.chmod(path, os.stat(config_file).st_mode & 0o7777)
        except OSError:
            pass
        return path

    def validate(self, sshd: str, path: str, config_file: str) -> None:
        try:
            validate_file(sshd, path)
        except ValidationError as exc:
            message = str(exc).replace(path, f"{config_file} (candidate)")
            detail = ""
            if path != config_file:
                try:
                    validate_file(sshd, config_file)
                except ValidationError as orig:
                    detail = f" Note: the current {config_file} is already invalid ({orig}); fix it by hand first."
            self.fail(
                f"sshd -t rejected the configuration, so {config_file} and the running sshd were left untouched: {message}.{detail}",
                changed=False,
                validation_error=str(exc),
            )

    # .. reload ....................................................................................

    def pid_file(self, sshd: Optional[str], config_file: str) -> str:
        explicit = self.params.get("pid_file")
        if explicit:
            return str(explicit)
        if sshd:
            try:
                return effective_values(sshd, config_file).get("pidfile", DEFAULT_PID_FILE)
            except SshdConfigError:
                return DEFAULT_PID_FILE
        return DEFAULT_PID_FILE

    def service_command(self) -> Optional[List[str]]:
        get_bin_path = self.module.get_bin_path
        if _systemd_running():
            systemctl = get_bin_path("systemctl")
            if systemctl:
                for unit in ("ssh", "sshd"):
                    rc, out, _err = self.module.run_command([systemctl, "show", "-p", "LoadState", "--value", unit])
                    if rc == 0 and out.strip() == "loaded":
                        return [systemctl, "reload", unit]
        service = get_bin_path("service")
        if service:
            for name in ("ssh", "sshd"):
                if os.path.exists(f"/etc/init.d/{name}"):
                    return [service, name, "reload"]
        return None

    def reload(self, sshd: Optional[str], config_file: str) -> None:
        method = str(self.params.get("reload_method") or "auto")
        if method == "none":
            self.result["reload_method"] = "none"
            return
        command = None
        if method in ("auto", "service"):
            command = self.service_command()
            if command is None and method == "service":
                self.fail("reload_method=service: neither systemd (systemctl) nor a 'service' script for ssh/sshd was found; use reload_method=signal")
        if command is not None:
            rc, out, err = self.module.run_command(command)
            if rc != 0:
                self.fail(f"{' '.join(command)} failed (rc={rc}): {(err or out).strip()}", changed=True)
            self.result.update({"reloaded": True, "reload_method": "service", "reload_command": command})
            return
        pid_file = self.pid_file(sshd, config_file)
        try:
            pid = read_pid(pid_file)
            reopened = sighup_and_wait(pid)
        except SshdConfigError as exc:
            self.fail(str(exc), changed=True)
        if not pid_alive(pid):
            self.fail(f"sshd (pid {pid} from {pid_file}) exited after SIGHUP: look at its log; the new file is in place", changed=True)
        if not reopened:
            self.warnings.append(f"sent SIGHUP to sshd pid {pid} but did not see it re-open its listeners within 10 s")
        self.result.update({"reloaded": True, "reload_method": "signal", "pid": pid, "pid_file": pid_file})

    # .. confirm ...................................................................................

    def confirm(self, sshd: str, path: str, settings: Dict[str, object], match: Optional[str]) -> None:
        spec: Optional[str] = None
        if match:
            spec = str(self.params.get("match_test") or "") or derive_connection_spec(match)
            if not spec:
                self.warnings.append(f"cannot derive an 'sshd -T -C' connection spec from 'Match {match}': set match_test to confirm the effective values")
                return
        try:
            values = effective_values(sshd, path, spec)
        except SshdConfigError as exc:
            self.warnings.append(f"could not confirm the effective values: {exc}")
            return
        self.result["connection_spec"] = spec
        effective = {keyword: values.get(keyword) for keyword in settings}
        self.result["effective"] = effective
        wrong = []
        for keyword, value in settings.items():
            wanted = normalise_value(keyword, render_value(keyword, value))
            if normalise_value(keyword, effective.get(keyword) or "") != wanted:
                wrong.append(f"{CANONICAL[keyword]}: wanted '{wanted}', sshd -T reports '{effective.get(keyword)}'")
        if wrong:
            where = f"for connection {spec}" if spec else "globally"
            self.fail(
                f"the file now says what was asked, but sshd -T {where} disagrees: {'; '.join(wrong)}. "
                "An earlier Match block or included file wins; see sshd_warnings.",
                changed=bool(self.result.get("changed")),
                effective=effective,
            )


def run_module(module: AnsibleModule) -> None:
    """Entry point used by plugins/modules/sshd_forwarding.py."""
    _Runner(module).run()
