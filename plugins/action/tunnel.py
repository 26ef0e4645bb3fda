# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Controller side of burrow.ssh.tunnel: resolve inventory hops, validate the declaration early, set the play owner."""

from __future__ import annotations

import os
import typing as t

from ansible import constants as C
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.errors import UnsupportedError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.burrow.ssh.plugins.module_utils._module_args import TUNNEL_ARGUMENT_SPEC, refuse_non_finite_numbers, tunnel_from_module, unset_nulls
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import boot_id, process_start_time
from ansible_collections.burrow.ssh.plugins.plugin_utils._inventory_hops import TemplatedHostvars, resolve_tunnel_hops

# What a task may set: lifetime_owner is set here, never by the user, so it is neither accepted nor listed.
display = Display()
USER_ARGUMENT_SPEC = {key: value for key, value in TUNNEL_ARGUMENT_SPEC.items() if key != "lifetime_owner"}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: t.Any = None, task_vars: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        # null is unset (the option's default applies), also for options with a default such as via or port.
        args = unset_nulls(self._task.args)
        try:
            refuse_non_finite_numbers(args)
        except SpecError as exc:
            result.update(failed=True, msg=f"invalid tunnel declaration: {exc}", field=exc.field, errors=[str(exc)])
            return result
        # First the conversions every Ansible user expects (-e ttl=60 arrives as the string "60"), with the
        # module's own argument spec; then the declaration grammar the module and the tunnel process use.
        converted = ArgumentSpecValidator(USER_ARGUMENT_SPEC).validate(args)
        if converted.error_messages:
            # Ansible's own wording for unknown options, as a module without an action plugin would say it.
            messages = [
                f"Unsupported parameters for (burrow.ssh.tunnel) module: {error}" if isinstance(error, UnsupportedError) else str(error)
                for error in converted.errors.errors
            ]
            result.update(failed=True, msg="; ".join(messages), errors=messages)
            return result
        args = {key: converted.validated_parameters[key] for key in args}
        if args.get("host_key_checking") is None and not C.HOST_KEY_CHECKING:
            # As the connection plugins: ANSIBLE_HOST_KEY_CHECKING=False (or ansible.cfg) turns checking off, unless the task sets it.
            args["host_key_checking"] = "off"
            display.warning("burrow.ssh.tunnel: host key checking is off (ANSIBLE_HOST_KEY_CHECKING is false); set host_key_checking to override")
        try:
            hostvars = task_vars.get("hostvars")
            args = resolve_tunnel_hops(args, TemplatedHostvars(hostvars, self._templar.template) if hostvars is not None else {})
        except ValueError as exc:
            result.update(failed=True, msg=f"invalid tunnel declaration: {exc}")
            return result
        if converted.validated_parameters.get("state", "present") != "absent":
            try:
                # Parsed here for errors that name the field before anything runs; the module parses the same options again.
                tunnel_from_module(dict(converted.validated_parameters, **args))
            except SpecError as exc:
                result.update(failed=True, msg=f"invalid tunnel declaration: {exc}", field=exc.field, errors=[str(exc)])
                return result
        if args.get("lifetime") == "play":
            owner_pid = os.getppid()
            args["lifetime_owner"] = {"pid": owner_pid, "start_time": process_start_time(owner_pid), "boot_id": boot_id()}
        result.update(self._execute_module(module_name="burrow.ssh.tunnel", module_args=args, task_vars=task_vars))
        return result
