#!/usr/bin/env bash
# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# The shared connection checks (../connection, after ansible-core's connection target) through burrow.ssh.tunneled,
# on four hosts: straight to a target sshd and through a bastion sshd, each with pipelining on and off
# (community.general's connection_posix pattern). sandbox_lab.py starts both sshd on loopback and stops them after.
# The "remote" files go to the lab directory too (the target sshd is this machine), removed with it.
set -eux
here=$(cd "$(dirname "$0")" && pwd)
# ansible-test runs a copy of this directory elsewhere; the collection (tests/sandbox) is on its collections path.
root="${ANSIBLE_COLLECTIONS_PATH%%:*}/ansible_collections/burrow/ssh"
[ -f "$root/tests/sandbox/sandbox.py" ] || root=$(cd "$here/../../../.." && pwd)
source "$root/tests/sandbox/ansible_test_env.sh"
# shellcheck disable=SC2016  # the inner script expands its own variables (LAB_*, set by sandbox_lab.py)
"$python" "$here/sandbox_lab.py" "$root/tests/sandbox" -- bash -c '
  cd "$1/../connection"
  shift
  INVENTORY="$LAB_INVENTORY" ./test.sh -e target_hosts=tunneled -e action_prefix= \
    -e local_tmp="$LAB_DIR/local" -e remote_tmp="$LAB_DIR/remote" "$@"' _ "$here" "$@"
