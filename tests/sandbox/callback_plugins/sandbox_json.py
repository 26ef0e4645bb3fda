# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A JSON stdout callback for the test harness (ansible-core 2.19 ships none; ansible.posix.json is not installed).

Prints one JSON document at the end of the run: ``{"plays": [{"play": {...}, "tasks": [{"task": {...},
"hosts": {HOST: RESULT}}]}], "stats": {HOST: {...}}}`` -- the same shape as ``ansible.posix.json``.
"""

from __future__ import annotations

DOCUMENTATION = """
    name: sandbox_json
    type: stdout
    short_description: JSON output of a whole playbook run, for burrow.ssh's integration tests
    description:
      - One JSON document on stdout when the run ends, shaped like ansible.posix.json's.
"""

import json  # noqa: E402 - plugins put DOCUMENTATION first
import typing as t  # noqa: E402 - plugins put DOCUMENTATION first

from ansible.parsing.ajson import AnsibleJSONEncoder  # noqa: E402 - plugins put DOCUMENTATION first
from ansible.plugins.callback import CallbackBase  # noqa: E402 - plugins put DOCUMENTATION first


def _result_of(result: t.Any) -> tuple[str, dict[str, t.Any]]:
    host = getattr(result, "host", None) or result._host
    data = getattr(result, "result", None)
    if data is None:
        data = result._result
    return host.get_name(), dict(data)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "sandbox_json"

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.results: list[dict[str, t.Any]] = []

    def v2_playbook_on_play_start(self, play: t.Any) -> None:
        self.results.append({"play": {"name": play.get_name(), "id": str(play._uuid)}, "tasks": []})

    def _task_entry(self, task: t.Any) -> dict[str, t.Any]:
        if not self.results:
            self.results.append({"play": {"name": "", "id": ""}, "tasks": []})
        tasks = self.results[-1]["tasks"]
        if not tasks or tasks[-1]["task"]["id"] != str(task._uuid):
            tasks.append({"task": {"name": task.get_name(), "action": task.action, "id": str(task._uuid)}, "hosts": {}})
        return tasks[-1]

    def v2_playbook_on_task_start(self, task: t.Any, is_conditional: bool) -> None:
        self._task_entry(task)

    def v2_playbook_on_handler_task_start(self, task: t.Any) -> None:
        self._task_entry(task)

    def _record(self, result: t.Any, **flags: t.Any) -> None:
        host, data = _result_of(result)
        data.update(flags)
        self._task_entry(result._task)["hosts"][host] = data

    def v2_runner_on_ok(self, result: t.Any, **kwargs: t.Any) -> None:
        self._record(result)

    def v2_runner_on_failed(self, result: t.Any, ignore_errors: bool = False, **kwargs: t.Any) -> None:
        self._record(result, failed=True, ignore_errors=ignore_errors)

    def v2_runner_on_skipped(self, result: t.Any, **kwargs: t.Any) -> None:
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result: t.Any, **kwargs: t.Any) -> None:
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats: t.Any) -> None:
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        output = {"plays": self.results, "stats": summary, "custom_stats": getattr(stats, "custom", {})}
        self._display.display(json.dumps(output, cls=AnsibleJSONEncoder, indent=2, sort_keys=True))
