# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared pytest wiring: the collection on sys.path, the sandbox fixtures and the ansible-playbook runner."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import typing as t

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SANDBOX_DIR = REPO / "tests" / "sandbox"
BUILD_COLLECTIONS = REPO / ".build" / "collections"
CALLBACK_DIR = SANDBOX_DIR / "callback_plugins"
# The ansible-playbook of the interpreter running the tests (scripts/compat runs them with other ansible-core venvs).
ANSIBLE_PLAYBOOK = pathlib.Path(sys.executable).parent / "ansible-playbook"
if not ANSIBLE_PLAYBOOK.exists():
    ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"

if str(SANDBOX_DIR) not in sys.path:
    sys.path.insert(0, str(SANDBOX_DIR))

from sandbox import Postgres, Sandbox, Service, Sshd  # noqa: E402


def ensure_collection_link() -> pathlib.Path:
    """.build/collections/ansible_collections/burrow/ssh -> the repo root (safe when another process made it first)."""
    link = BUILD_COLLECTIONS / "ansible_collections" / "burrow" / "ssh"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not (link.is_symlink() and link.resolve() == REPO):
        tmp = link.with_name(f".ssh.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(REPO, target_is_directory=True)
        tmp.replace(link)
    return BUILD_COLLECTIONS


# Unit and integration tests import ansible_collections.burrow.ssh.* from the checkout.
ensure_collection_link()
if str(BUILD_COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(BUILD_COLLECTIONS))


def pytest_configure(config: pytest.Config) -> None:
    # also declared in pytest.ini; repeated so the markers exist when pytest runs with another ini file
    config.addinivalue_line("markers", "needs_root: runs only as root (network namespaces, sshd privilege separation)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("needs_root") is not None and os.geteuid() != 0:
        pytest.skip("needs root")


# ------------------------------------------------------------------------------------------------------------
# sandbox fixtures


@pytest.fixture
def sandbox() -> t.Iterator[Sandbox]:
    """A fresh, empty Sandbox; stopped (everything killed, dir removed) in teardown even when the test fails."""
    with Sandbox() as box:
        yield box


@pytest.fixture(scope="session")
def sandbox_session() -> t.Iterator[Sandbox]:
    """One Sandbox for the session with sshd, echo, http and (when installed) PostgreSQL; inventory in ROOT/inventory.yml."""
    with Sandbox() as box:
        box.start_sshd()
        box.start_echo()
        box.start_http()
        box.start_postgres()
        box.inventory_path = box.write_inventory(box.root / "inventory.yml")
        box.ssh_config_path = box.write_ssh_config(box.root / "ssh_config")
        yield box


@pytest.fixture(scope="session")
def sshd(sandbox_session: Sandbox) -> Sshd:
    assert sandbox_session.sshd is not None
    return sandbox_session.sshd


@pytest.fixture(scope="session")
def postgres(sandbox_session: Sandbox) -> Postgres:
    if sandbox_session.postgres is None:
        pytest.skip(f"PostgreSQL not available: {sandbox_session.skipped.get('postgres')}")
    return sandbox_session.postgres


@pytest.fixture(scope="session")
def echo_server(sandbox_session: Sandbox) -> Service:
    assert sandbox_session.echo is not None
    return sandbox_session.echo


@pytest.fixture(scope="session")
def http_server(sandbox_session: Sandbox) -> Service:
    assert sandbox_session.http is not None
    return sandbox_session.http


@pytest.fixture(scope="session")
def sandbox_inventory(sandbox_session: Sandbox) -> pathlib.Path:
    """The session sandbox's YAML inventory (0600: it holds the PostgreSQL password)."""
    return pathlib.Path(sandbox_session.inventory_path)


# ------------------------------------------------------------------------------------------------------------
# ansible-playbook


@pytest.fixture(scope="session")
def collections_path() -> pathlib.Path:
    """.build/collections, holding ansible_collections/burrow/ssh as a symlink to the repo root."""
    return ensure_collection_link()


_LOCAL_TEMP: list[str] = []


def _local_temp() -> str:
    """One ansible local temp directory per test session, removed when the session ends (pytest_unconfigure)."""
    if not _LOCAL_TEMP:
        _LOCAL_TEMP.append(tempfile.mkdtemp(prefix="burrow-ansible-local-"))
    return _LOCAL_TEMP[0]


def pytest_unconfigure(config: pytest.Config) -> None:
    while _LOCAL_TEMP:
        shutil.rmtree(_LOCAL_TEMP.pop(), ignore_errors=True)


def run_playbook(
    playbook_path: str | os.PathLike[str],
    inventory: str | os.PathLike[str],
    extra_vars: dict[str, t.Any] | None = None,
    check: bool = False,
    diff: bool = False,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run .venv/bin/ansible-playbook with the JSON stdout callback; ``result.json`` holds the parsed document (or None).

    Extra vars go through a 0600 temp file (``-e @file``) so secrets stay out of argv; ANSIBLE_HOST_KEY_CHECKING is left
    as the caller's environment has it.
    """
    run_env = dict(os.environ)
    run_env.update(
        ANSIBLE_COLLECTIONS_PATH=str(ensure_collection_link()),
        ANSIBLE_CALLBACK_PLUGINS=str(CALLBACK_DIR),
        ANSIBLE_STDOUT_CALLBACK="sandbox_json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCAL_TEMP=_local_temp(),
        PATH=f"{ANSIBLE_PLAYBOOK.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    if env:
        run_env.update(env)
    fd, vars_file = tempfile.mkstemp(prefix="burrow-extra-vars-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(extra_vars or {}, handle)
        argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), "-e", f"@{vars_file}", str(playbook_path)]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        result = subprocess.run(argv, capture_output=True, text=True, env=run_env, timeout=timeout, check=False, cwd=str(REPO))
    finally:
        os.unlink(vars_file)
    parsed: t.Any = None
    start = result.stdout.find("{")
    if start >= 0:
        with contextlib.suppress(ValueError):
            parsed = json.loads(result.stdout[start:])
    result.json = parsed  # type: ignore[attr-defined]
    return result


@pytest.fixture(scope="session")
def ansible_playbook(collections_path: pathlib.Path) -> t.Callable[..., subprocess.CompletedProcess[str]]:
    """The run_playbook helper, with the collection link in place."""
    return run_playbook
