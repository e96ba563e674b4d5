"""Each module is loaded under one name (issue #9, item 6).

The checkout's ``spawner/``, ``labextension/`` and ``tests/`` are reached through the package's
``kubelab.*`` symlinks; a module imported both as ``tests.x`` and ``kubelab.tests.x`` is two copies
with two sets of classes and constants. Collecting the whole suite (which imports every test module,
every support module and what they import) must leave no file in ``sys.modules`` as two module objects (one object under two names, as
``tests`` and ``kubelab.tests`` are, is one module).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_COLLECT = r"""
import json, os, sys
import pytest
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", sys.argv[1]])
copies = {}
for name, module in list(sys.modules.items()):
    path = getattr(module, "__file__", None)
    if path:
        copies.setdefault(os.path.realpath(path), {}).setdefault(id(module), []).append(name)
dupes = {
    path: sorted(sum(by_id.values(), []))
    for path, by_id in copies.items()
    if len(by_id) > 1 and path.startswith(sys.argv[2]) and "site-packages" not in path
}
print("RESULT " + json.dumps({"code": int(code), "dupes": dupes}))
"""


def test_no_module_of_the_checkout_is_loaded_under_two_names() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _COLLECT, str(ROOT / "tests"), str(ROOT)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["code"] == 0, done.stdout[-3000:]
    assert result["dupes"] == {}, "modules loaded under two names: " + json.dumps(result["dupes"], indent=1)


def test_the_checkouts_folders_refuse_their_top_level_names() -> None:
    """``import spawner`` from the repository root would be a second copy of ``kubelab.spawner``."""
    for name in ("spawner", "labextension"):
        done = subprocess.run(
            [sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode != 0
        assert f"kubelab.{name}" in done.stderr
