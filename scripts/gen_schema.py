#!/usr/bin/env python
# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Write docs/tunnel.schema.json from TUNNEL_SCHEMA (scripts/tunnel_schema.py).

--check: write nothing, exit 1 when the file is missing or differs from what would be written.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "scripts" / "tunnel_schema.py"
TARGET = REPO / "docs" / "tunnel.schema.json"


def render() -> str:
    # tunnel_schema.py is stdlib only: load it by path, so this works without the ansible_collections layout.
    spec = importlib.util.spec_from_file_location("burrow_tunnel_schema", SOURCE)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {SOURCE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return json.dumps(module.TUNNEL_SCHEMA, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale; write nothing")
    parser.add_argument("--output", type=Path, default=TARGET, help=f"file to write (default {TARGET.relative_to(REPO)})")
    args = parser.parse_args(argv)
    text = render()
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"{args.output} is stale: run scripts/gen_schema.py", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    if current != text:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        print(f"{args.output} unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
