# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""How a ``via`` is split into hops: the one place a jump list is cut on commas.

Standard library and errors.py only: Ansible's worker processes import it to resolve inventory hostnames
without compiling the rest of the parser.
"""

from __future__ import annotations

import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError


def as_list(value: object, field: str) -> list[t.Any]:
    if value is None:
        return []
    if isinstance(value, (str, t.Mapping)):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise SpecError(field, value, "must be a list")


def split_via(value: object, option: str = "via") -> list[tuple[str, t.Any]]:
    """Jump hosts as (field, entry) pairs: a list, a ProxyJump string ``u1@j1,u2@j2``, or a list mixing both.

    The one place a ``via`` is split on commas; fields name each part (``via[1]``, ``via[0][2]``) for errors.
    """
    if value is None:
        return []
    if isinstance(value, str):
        if "," not in value:
            return [(f"{option}[0]", value)] if value else []
        return [(f"{option}[{index}]", part.strip()) for index, part in enumerate(value.split(","))]
    entries: list[tuple[str, t.Any]] = []
    for index, item in enumerate(as_list(value, option)):
        if isinstance(item, str) and "," in item:
            entries.extend((f"{option}[{index}][{sub}]", part.strip()) for sub, part in enumerate(item.split(",")))
        else:
            entries.append((f"{option}[{index}]", item))
    return entries
