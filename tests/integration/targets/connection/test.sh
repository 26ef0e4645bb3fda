#!/usr/bin/env bash
# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# The shared connection checks, with ansible-core's connection target's interface: INVENTORY names the inventory,
# and the caller passes -e target_hosts=GROUP -e action_prefix= -e local_tmp=DIR -e remote_tmp=DIR.
set -eux

[ -f "${INVENTORY}" ]

ansible-playbook test_connection.yml -i "${INVENTORY}" "$@"

# Connection variables (ansible_host, the plugin's own) never appear in a task's verbose output.
out=$(mktemp)
trap 'rm -f "$out"' EXIT
ansible all -i "${INVENTORY}" -m set_fact -a "testing=value" -v | tee "$out"
if grep -E 'ansible_host|burrow_via|ansible_ssh_private_key_file' "$out"; then
  echo "FAILURE: connection variables in the output"
  exit 1
fi
echo "SUCCESS: connection variables not in the output"

ansible-playbook test_reset_connection.yml -i "${INVENTORY}" "$@"
