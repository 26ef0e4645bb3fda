# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Controller side of burrow.ssh.tunnel: validate the declaration, resolve inventory hops, set the play owner."""

from __future__ import annotations

import os
import typing as t

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.burrow.ssh.plugins.module_utils._module_args import TUNNEL_ARGUMENT_SPEC
from ansible_collections.burrow.ssh.plugins.module_utils._paths import boot_id, process_start_time
from ansible_collections.burrow.ssh.plugins.module_utils._schema import validate_with_jsonschema

# Inventory variables that describe how to reach a host, mapped to hop fields.
HOP_VARIABLES = {
    "host": ("ansible_host",),
    "port": ("ansible_port", "ansible_ssh_port"),
    "user": ("ansible_user", "ansible_ssh_user"),
    "private_key_file": ("ansible_ssh_private_key_file", "ansible_private_key_file"),
    "password": ("ansible_password", "ansible_ssh_pass"),
    "known_hosts_file": ("burrow_known_hosts_file",),
    "host_key_fingerprint": ("burrow_host_key_fingerprint",),
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: t.Any = None, task_vars: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        # First the conversions every Ansible user expects (-e ttl=60 arrives as the string "60"), with the
        # module's own argument spec; then the schema, which checks what the spec cannot (forward syntax, hosts).
        converted = ArgumentSpecValidator(TUNNEL_ARGUMENT_SPEC).validate(args)
        if converted.error_messages:
            result.update(failed=True, msg="invalid tunnel declaration: " + "; ".join(converted.error_messages), errors=converted.error_messages)
            return result
        args = {key: converted.validated_parameters[key] for key in args}
        errors = validate_with_jsonschema(args)
        if errors:
            result.update(failed=True, msg="invalid tunnel declaration: " + "; ".join(errors), errors=errors)
            return result
        hostvars = task_vars.get("hostvars") or {}
        args["via"] = [self._resolve_hop(entry, hostvars) for entry in self._via_entries(args.get("via"))]
        host = args.get("host")
        if isinstance(host, str) and host in hostvars:
            resolved = self._resolve_hop(host, hostvars)
            args["host"] = resolved.pop("host")
            for key, value in resolved.items():
                if args.get(key) is None:
                    args[key] = value
        if args.get("lifetime") == "play":
            owner_pid = os.getppid()
            args["lifetime_owner"] = {"pid": owner_pid, "start_time": process_start_time(owner_pid), "boot_id": boot_id()}
        result.update(self._execute_module(module_name="burrow.ssh.tunnel", module_args=args, task_vars=task_vars))
        return result

    @staticmethod
    def _via_entries(via: t.Any) -> list[t.Any]:
        if via is None:
            return []
        if isinstance(via, str):
            return [part for part in via.split(",") if part]
        return list(via)

    def _resolve_hop(self, entry: t.Any, hostvars: t.Any) -> t.Any:
        """An inventory host name becomes a dict of its connection variables; anything else is kept as given."""
        if not isinstance(entry, str) or entry not in hostvars:
            return entry
        variables = hostvars[entry]
        hop: dict[str, t.Any] = {"host": entry}
        for field, names in HOP_VARIABLES.items():
            for name in names:
                if name in variables and variables[name] is not None:
                    value = self._templar.template(variables[name])
                    hop[field] = int(value) if field == "port" else value
                    break
        return hop
