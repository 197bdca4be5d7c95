"""Rule fingerprints come from each stage's import closure, not from hand-kept lists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lookright.stages import COMMANDS
from lookright.stages.fingerprint import closure, fingerprint

STAGES = [c.module for c in COMMANDS.values() if c.stage]


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "lookright" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "lookright"


def test_closure_follows_every_import_but_type_checking_ones(tmp_path):
    package = _package(
        tmp_path,
        {
            "__init__.py": "",
            "stage.py": (
                "from typing import TYPE_CHECKING\n"
                "from lookright.a import thing\n"
                "if TYPE_CHECKING:\n    import lookright.typing_only\n"
                "def run():\n    from .lazy import helper\n"
            ),
            "a/__init__.py": "",
            "a/thing.py": "from ..deep import x\n",
            "lazy.py": "",
            "deep.py": "",
            "typing_only.py": "",
            "unrelated.py": "",
        },
    )
    found = set(closure(["lookright.stage"], package))
    assert found == {
        "lookright", "lookright.stage", "lookright.a", "lookright.a.thing",
        "lookright.lazy", "lookright.deep",
    }  # fmt: skip
    before = fingerprint("lookright.stage", root=package)
    (package / "unrelated.py").write_text("x = 1\n")
    assert fingerprint("lookright.stage", root=package) == before
    (package / "deep.py").write_text("x = 1\n")  # imported two hops away
    assert fingerprint("lookright.stage", root=package) != before


def test_a_lazily_exported_name_counts_as_an_import_of_its_module_only(tmp_path):
    lazy_init = (
        '_LAZY = {"thing": "lookright.a.impl", "other": "lookright.a.heavy"}\n'
        "def __getattr__(name):\n    import importlib\n"
        "    return getattr(importlib.import_module(_LAZY[name]), name)\n"
    )
    package = _package(
        tmp_path,
        {
            "__init__.py": "",
            "stage.py": "from lookright.a import thing\n",
            "a/__init__.py": lazy_init,
            "a/impl.py": "def thing(): ...\n",
            "a/heavy.py": "def other(): ...\n",
        },
    )
    assert set(closure(["lookright.stage"], package)) == {
        "lookright", "lookright.stage", "lookright.a", "lookright.a.impl"
    }  # fmt: skip
    before = fingerprint("lookright.stage", root=package)
    (package / "a" / "heavy.py").write_text("def other(): return 1\n")
    assert fingerprint("lookright.stage", root=package) == before
    (package / "a" / "impl.py").write_text("def thing(): return 1\n")
    assert fingerprint("lookright.stage", root=package) != before


@pytest.mark.parametrize("module", STAGES)
def test_closure_holds_every_module_the_stage_imports(module):
    """Python's own account: every lookright module loaded by importing the stage (and the
    CLI) is in its fingerprint."""
    code = (
        f"import sys, lookright.cli, {module}; "
        "print(__import__('json').dumps(sorted(m for m in sys.modules if m.startswith('lookright'))))"
    )
    loaded = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    missing = set(loaded) - set(closure([module, "lookright.cli"]))
    assert not missing, missing


def test_library_packages_import_no_stage_and_no_cli():
    root = Path(closure(["lookright.cli"])["lookright"]).parent
    for package in ("data", "models", "saliency", "rewards", "decoding", "train", "metrics",
                    "report"):  # fmt: skip
        for path in sorted((root / package).rglob("*.py")):
            module = "lookright." + ".".join(path.relative_to(root).with_suffix("").parts)
            module = module.removesuffix(".__init__")
            imported = closure([module], root)
            upward = [m for m in imported if m.startswith(("lookright.stages", "lookright.cli"))]
            assert not upward, f"{module} imports {upward}"


def test_the_deletion_metric_is_not_in_the_training_stages_fingerprint():
    """Occlusion (a saliency-registry method, loaded by GRPO's saliency rewards) shares the
    image perturbation with deletion, not the deletion metric: editing the metric reruns the
    evaluations, not GRPO training (issue 17)."""
    grpo = closure(["lookright.stages.grpo"])
    assert "lookright.saliency.occlusion" in grpo and "lookright.metrics.perturbation" in grpo
    assert "lookright.metrics.faithfulness" not in grpo
    assert "lookright.metrics.faithfulness" in closure(["lookright.stages.evaluate_saliency"])
