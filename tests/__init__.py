"""kubelab's own tests. Not in the wheel (docs/testing.md); reached as ``kubelab.tests``.

pytest collects this folder as the package ``tests`` (the checkout's top level has no
``__init__.py``). So that ``tests`` and ``kubelab.tests`` are one package, not two copies, the name
``tests`` is bound to ``kubelab.tests``: test modules then load as ``tests.test_x`` inside it and the
shared helpers (``*_support.py``, ``kubeapi/``) once, as ``kubelab.tests.*``. Test modules never
import one another; what several share lives in a support module (tests/test_one_name.py checks).
"""

import importlib as _importlib
import sys as _sys

if __name__ == "tests":
    _sys.modules[__name__] = _importlib.import_module("kubelab.tests")
