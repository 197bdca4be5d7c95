"""Jobs start in a second: importing a stage module (what parsing its arguments and checking
its config need) loads none of the heavy libraries; each stage imports them where a model or
a trainer is first used. Each module is imported in a fresh interpreter, so a library some
other test already loaded cannot hide the import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lookright.stages import COMMANDS

HEAVY = ("torch", "transformers", "trl", "peft", "accelerate", "scipy", "datasets")

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps([m for m in {heavy!r} if m in sys.modules]))
"""


@pytest.mark.parametrize("command", [n for n, c in COMMANDS.items() if c.stage])
def test_stage_module_imports_no_heavy_library(command):
    module = COMMANDS[command].module
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), module],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing {module} loads {loaded}: import them inside the functions"
