# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""What an unset setting means, applied where the value is read (so that "unset" stays distinguishable from an explicit
value and the ssh_config can fill it, as with ssh): the tunnel's and every hop's.

No imports: Ansible's worker processes compile the connection plugin's imports from source for every task, and the
plugin needs only these values, not the declaration model (spec/model.py and the probes it carries).
"""

from __future__ import annotations

DEFAULT_KEEPALIVE_INTERVAL = 5
DEFAULT_KEEPALIVE_COUNT_MAX = 3
DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_USE_AGENT = True
DEFAULT_HOST_KEY_CHECKING = "strict"
