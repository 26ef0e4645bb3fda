# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: burrow_fakepw
short_description: Test-only become method that asks for a password like sudo -S
description:
  - Prints a password prompt on stderr, reads one line from stdin (echo off on a tty), checks it against a fixed test value,
    then runs the command as the same user. Exercises a connection plugin's prompt handling without sudo or a second user.
author: the burrow.ssh team
options:
  become_pass:
    description: The password to answer with.
    type: str
    vars:
      - name: ansible_become_password
      - name: ansible_become_pass
"""

import shlex  # noqa: E402

from ansible.plugins.become import BecomeBase  # noqa: E402

EXPECTED = "burrow-S3cret"
PROMPT = "[burrow-fakepw] password:"


class BecomeModule(BecomeBase):
    name = "burrow_fakepw"
    pipelining = True

    def build_become_command(self, cmd: str, shell: object) -> str:
        super().build_become_command(cmd, shell)
        if not cmd:
            return cmd
        self.prompt = PROMPT
        check = (
            f"if [ -t 0 ]; then stty -echo; fi; printf '%s' '{PROMPT}' >&2; IFS= read -r pw; "
            f"if [ -t 0 ]; then stty echo; fi; [ \"$pw\" = '{EXPECTED}' ] || {{ echo 'burrow-fakepw: Sorry, try again.' >&2; exit 97; }}; "
        )
        return "/bin/sh -c " + shlex.quote(check + self._build_success_command(cmd, shell))
