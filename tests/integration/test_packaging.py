# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection as users get it: build the tarball, install it into an empty collections path, and run a
scenario playbook and the role from that install (never from the source tree); the execution environment
definition through ansible-builder."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import tarfile
import typing as t

import pytest
import yaml
from engine_helpers import echo_roundtrip

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import TunnelHandle

REPO = pathlib.Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """ansible-galaxy collection build + install into an empty path; returns that collections path."""
    work = tmp_path_factory.mktemp("packaging")
    build = subprocess.run(
        [str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(work), str(REPO)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    tarball = work / f"burrow-ssh-{version}.tar.gz"
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    for expected in (
        "MANIFEST.json",
        "roles/tunnels/meta/argument_specs.yml",
        "playbooks/bastion_database.yml",
        "plugins/modules/tunnel.py",
        "meta/execution-environment.yml",
        "bindep.txt",
        "requirements.txt",
        "LICENSES/GPL-3.0-or-later.txt",
    ):
        assert expected in names, expected
    assert not [name for name in names if name.startswith((".venv", ".build", ".git/")) or "__pycache__" in name]
    collections = work / "collections"
    collections.mkdir()
    install = subprocess.run(
        [str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--offline", "-p", str(collections), str(tarball)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    root = collections / "ansible_collections" / "burrow" / "ssh"
    assert (root / "MANIFEST.json").is_file() and not root.is_symlink()
    return collections


def _run(installed: pathlib.Path, argv: list[str], extra_vars: dict[str, t.Any], tmp_path: pathlib.Path, state_dir: pathlib.Path) -> t.Any:
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(extra_vars))
    vars_file.chmod(0o600)
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(installed),  # only the install: the repo's .build link is not on this path
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        BURROW_STATE_DIR=str(state_dir),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), *argv, "-e", f"@{vars_file}"], capture_output=True, text=True, env=env, timeout=300, check=False, cwd=str(tmp_path)
    )


@pytest.fixture
def state_dir(tmp_path: pathlib.Path) -> t.Iterator[pathlib.Path]:
    path = tmp_path / "state"
    yield path
    if path.is_dir():
        for state in path.glob("*.json"):
            with contextlib.suppress(ProcessLookupError, KeyError, ValueError, OSError):
                os.kill(int(json.loads(state.read_text())["pid"]), signal.SIGKILL)


def test_installed_collection_runs_a_scenario_playbook_and_the_role(
    installed: pathlib.Path,
    sandbox_session: t.Any,
    http_server: t.Any,
    echo_server: t.Any,
    sandbox_inventory: pathlib.Path,
    tmp_path: pathlib.Path,
    state_dir: pathlib.Path,
) -> None:
    # The module and role paths that ansible resolves come from the install.
    doc = subprocess.run(
        [str(VENV_BIN / "ansible-doc"), "--json", "-t", "role", "burrow.ssh.tunnels"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(installed)},
    )
    role_doc = json.loads(doc.stdout)["burrow.ssh.tunnels"]
    assert role_doc["path"].startswith(str(installed)), role_doc["path"]

    scenario = _run(
        installed,
        ["-i", str(sandbox_inventory), "burrow.ssh.socks_proxy", "-v"],
        {"socks_server": "sandbox_sshd", "socks_port": 0, "socks_check_url": f"http://localhost:{http_server.port}/", "socks_ttl": 120},
        tmp_path,
        state_dir,
    )
    assert scenario.returncode == 0, scenario.stdout[-3000:] + scenario.stderr[-2000:]
    assert sandbox_session.http_body.decode().strip() in scenario.stdout
    assert (state_dir / "socks-proxy.json").is_file()

    play = tmp_path / "role.yml"
    play.write_text(yaml.safe_dump([{"name": "Role from the install", "hosts": "localhost", "gather_facts": False, "roles": [{"role": "burrow.ssh.tunnels"}]}]))
    declared = {
        "tunnels_defaults": {"host": "sandbox_sshd"},
        "tunnels_purge": True,
        "tunnels_list": [{"name": "packaged-echo", "local_forwards": [f"127.0.0.1:0:127.0.0.1:{echo_server.port}"]}],
    }
    role = _run(installed, ["-i", str(sandbox_inventory), str(play), "-v"], declared, tmp_path, state_dir)
    assert role.returncode == 0, role.stdout[-3000:] + role.stderr[-2000:]
    status = TunnelHandle(str(state_dir), "packaged-echo").inspect()
    assert status["status"] == "up"
    assert echo_roundtrip(("127.0.0.1", status["forwards"][0]["bound_port"]), b"from the installed role") == b"from the installed role"
    assert sorted(path.stem for path in state_dir.glob("*.json")) == ["packaged-echo"], "purge removed the SOCKS proxy"

    info = _run(installed, ["-i", str(sandbox_inventory), str(play)], {**declared, "tunnels_list": []}, tmp_path, state_dir)
    assert info.returncode == 0, info.stdout[-3000:]
    assert list(state_dir.glob("*.json")) == []


def test_execution_environment_definition(installed: pathlib.Path, tmp_path: pathlib.Path) -> None:
    builder = VENV_BIN / "ansible-builder"
    if not builder.exists():
        pytest.skip("ansible-builder is not installed (tests/requirements.txt)")
    # introspect reads meta/execution-environment.yml of every installed collection, as a build would.
    introspect = subprocess.run([str(builder), "introspect", "--sanitize", str(installed)], capture_output=True, text=True, timeout=120, check=False)
    assert introspect.returncode == 0, introspect.stdout + introspect.stderr
    # The only Python dependency where tunnels run: the declaration grammar is the standard library (jsonschema is for tests).
    assert "paramiko" in introspect.stdout and "jsonschema" not in introspect.stdout
    assert "openssh-client [platform:dpkg]" in introspect.stdout

    tarball = next(installed.parent.glob("burrow-ssh-*.tar.gz"))
    (tmp_path / "requirements.yml").write_text(yaml.safe_dump({"collections": [{"name": str(tarball), "type": "file"}]}))
    (tmp_path / "execution-environment.yml").write_text(
        yaml.safe_dump(
            {
                "version": 3,
                "images": {"base_image": {"name": "quay.io/fedora/fedora:41"}},
                "dependencies": {
                    "ansible_core": {"package_pip": "ansible-core>=2.18,<2.22"},
                    "ansible_runner": {"package_pip": "ansible-runner"},
                    "galaxy": "requirements.yml",
                    "python_interpreter": {"package_system": "python3", "python_path": "/usr/bin/python3"},
                },
            }
        )
    )
    context = tmp_path / "context"
    create = subprocess.run(
        [str(builder), "create", "--output-filename", "Containerfile", "-f", str(tmp_path / "execution-environment.yml"), "-c", str(context)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=str(tmp_path),
    )
    assert create.returncode == 0, create.stdout + create.stderr
    containerfile = (context / "Containerfile").read_text()
    assert "ansible-galaxy collection install" in containerfile or "install-from-bindep" in containerfile
    assert (context / "_build" / "requirements.yml").is_file()
    shutil.rmtree(context)
