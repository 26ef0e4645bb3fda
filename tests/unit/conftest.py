# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make `ansible_collections.burrow.ssh` importable: .build/collections/ansible_collections/burrow/ssh -> repo root."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".build" / "collections"
LINK = COLLECTIONS / "ansible_collections" / "burrow" / "ssh"


def _ensure_link() -> None:
    LINK.parent.mkdir(parents=True, exist_ok=True)
    if LINK.is_symlink() and LINK.resolve() == REPO:
        return
    if LINK.is_symlink() or LINK.exists():
        if not LINK.is_symlink():
            raise RuntimeError(f"{LINK} exists and is not a symlink to {REPO}: remove it")
        LINK.unlink()
    # Another process (a parallel pytest) may create it between the check and here.
    try:
        os.symlink(REPO, LINK, target_is_directory=True)
    except FileExistsError:
        if not (LINK.is_symlink() and LINK.resolve() == REPO):
            raise


_ensure_link()
if str(COLLECTIONS) in sys.path:
    sys.path.remove(str(COLLECTIONS))
sys.path.insert(0, str(COLLECTIONS))
