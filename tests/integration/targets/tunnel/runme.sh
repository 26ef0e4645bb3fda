#!/usr/bin/env bash
# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# The tunnel lifecycle (lifecycle.yml: check mode, apply, check again, apply again, probe, restart, absent, absent
# again, for local, remote and dynamic forwards) against a sandbox sshd on loopback, started and stopped by
# tests/sandbox/sandbox.py around the playbook.
set -eux
here=$(cd "$(dirname "$0")" && pwd)
# ansible-test runs a copy of this directory elsewhere; the collection (tests/sandbox) is on its collections path.
root="${ANSIBLE_COLLECTIONS_PATH%%:*}/ansible_collections/burrow/ssh"
[ -f "$root/tests/sandbox/sandbox.py" ] || root=$(cd "$here/../../../.." && pwd)
source "$root/tests/sandbox/ansible_test_env.sh"
"$python" "$root/tests/sandbox/sandbox.py" run --no-postgres -- ansible-playbook -i '{inventory}' "$here/lifecycle.yml" "$@"
