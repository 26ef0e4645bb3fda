# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures of the reliability suite: the namespace lab (one per module) and the measured figures.

Figures measured by the tests are merged into .build/reliability/figures.json (docs/reliability.md quotes them).
"""

from __future__ import annotations

import os
import pathlib
import resource
import shutil
import subprocess
import sys
import typing as t

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
for extra in (HERE, REPO / "tests" / "integration"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from helpers import record  # noqa: E402
from sandbox import Sandbox  # noqa: E402
from topology import Lab, tools_missing  # noqa: E402

# 1000 concurrent connections need ~2000 descriptors in this process, the tunnel process and the bastion sshd,
# which inherit the limit from here.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < min(_hard, 16384):
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(_hard, 16384), _hard))


def _ensure_nft() -> None:
    if shutil.which("nft") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "nftables"], capture_output=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def lab() -> t.Iterator[Lab]:
    """The bastion/db/edge namespaces with sshd, PostgreSQL and echo; torn down (and checked) even when tests fail."""
    if os.geteuid() != 0:
        pytest.skip("the namespace lab needs root")
    _ensure_nft()
    missing = tools_missing()
    if missing:
        pytest.skip(f"the namespace lab needs {', '.join(missing)}")
    with Sandbox() as box:
        topology = Lab(box)
        try:
            topology.build()
            yield topology
        finally:
            problems = topology.teardown()
    assert problems == [], problems


@pytest.fixture
def figures() -> t.Callable[..., None]:
    return record
