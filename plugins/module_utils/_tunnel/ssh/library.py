# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""paramiko, imported for the whole collection without the invoke library it would pull in at import time.

paramiko 4 and later import invoke when they are imported, for one feature only: ssh_config's ``Match exec``. invoke
brings yaml, asyncio and unittest.mock with it, 116 modules: 5.2 MiB PSS in every tunnel process and tunnel host,
which is forked from the module process and keeps what it imported (measured: 28.7 against 23.5 MiB for a fork of a
process that imported the tunnel code with and without it). Every file of the collection imports paramiko from here,
and invoke is loaded only for a configuration that uses ``Match exec`` (enable_match_exec).

paramiko 5 also reads its own version with importlib.metadata, which brings email, csv and zipfile: 1.6 MiB more in
every such process (measured on the module's imports). During the import, a stand-in answers from the name of the
dist-info directory, the first on sys.path as importlib.metadata would find it, and hands over to the real one when
there is no such directory.
"""

from __future__ import annotations

import os
import re
import sys
import types
import typing as t

# A Match line with an exec criterion, as ssh_config(5) writes it (keywords are case-insensitive).
MATCH_EXEC = re.compile(r"^\s*match\s.*\bexec\b", re.IGNORECASE | re.MULTILINE)


METADATA_MODULE = "importlib.metadata"


def installed_version(name: str) -> str:
    """``importlib.metadata.version(name)`` for a wheel installed as NAME-VERSION.dist-info; the real one otherwise."""
    prefix = name.replace("-", "_").lower() + "-"
    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:  # a zip payload, a missing directory
            continue
        for candidate in names:
            if candidate.lower().startswith(prefix) and candidate.endswith(".dist-info"):
                return candidate[len(prefix) : -len(".dist-info")]
    import importlib.metadata  # pylint: disable=import-outside-toplevel

    return importlib.metadata.version(name)


def _import_without_invoke() -> t.Any:
    held_back = "invoke" not in sys.modules
    stand_in = METADATA_MODULE not in sys.modules
    if held_back:
        sys.modules["invoke"] = None  # type: ignore[assignment]  # `import invoke` now raises ImportError
    if stand_in:
        metadata = types.ModuleType(METADATA_MODULE)
        metadata.version = installed_version  # type: ignore[attr-defined]
        sys.modules[METADATA_MODULE] = metadata
    try:
        import paramiko  # pylint: disable=import-outside-toplevel
    finally:
        if held_back:
            sys.modules.pop("invoke", None)  # a later `import invoke` (enable_match_exec, another library) works as usual
        if stand_in and sys.modules.get(METADATA_MODULE) is metadata:
            del sys.modules[METADATA_MODULE]  # a later `import importlib.metadata` loads the real module
    return paramiko


try:
    paramiko: t.Any = _import_without_invoke()
except ImportError:  # the callers report the missing library (transport.HAS_PARAMIKO)
    paramiko = None


def enable_match_exec(config_text: str) -> None:
    """Give paramiko the invoke library it runs ``Match exec`` commands with, when ``config_text`` has such a line.

    Without invoke installed, paramiko's own ImportError is raised when the line is evaluated, as before.
    """
    if not MATCH_EXEC.search(config_text):
        return
    config_module = sys.modules.get("paramiko.config")
    if config_module is None or getattr(config_module, "invoke", None) is not None:
        return
    try:
        import invoke  # pylint: disable=import-outside-toplevel
    except ImportError:
        return
    config_module.invoke = invoke
