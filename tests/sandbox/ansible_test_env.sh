# shellcheck shell=bash
# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Sourced by the runme.sh of the integration targets, under ansible-test: sets `python` (ansible-test's) and undoes
# the ANSIBLE_HOST_KEY_CHECKING=false that ansible-test exports, so the plugin and the module check every hop's host
# key against the sandbox's known_hosts, as they would for a user.
# shellcheck disable=SC2034  # python is used by the script that sources this file
python=${ANSIBLE_TEST_PYTHON_INTERPRETER:-python}
unset ANSIBLE_HOST_KEY_CHECKING
