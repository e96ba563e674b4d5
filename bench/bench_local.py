"""``kubelab up``'s spawner against JupyterHub's own: spawn request → server ready.

Two ``kubelab up`` hubs run side by side, identical (same proxy, authenticator, hub settings, the
same ``python -m jupyterhub.singleuser`` command with JupyterLab as the default URL) except for the
spawner:

* baseline: JupyterHub's ``SimpleLocalProcessSpawner`` (set in the hub's
  ``jupyterhub_config.local.py``), no options;
* subject: kubelab's ``LocalProfileSpawner`` with ``{"profile": "cpu"}``: config lookup, validation
  of the options (twice: in ``apply_user_options`` and again in ``start``), GPU detection (cached),
  the example dataset linked, ``RLIMIT_AS``, the server's own log file.

One sample is one REST ``POST /hub/api/users/NAME/server`` until the server is ready (the hub
answers 201 once the server responds and its proxy route is in place; a 202 is followed by polling).
Each sample spawns a new user, so no stop falls inside a measurement; both sides accumulate idle
servers at the same pace (the harness interleaves them). Both hubs are stopped with Ctrl-C at the end.

    python bench/run.py local            # issue 4: ratio ≤ 1.15
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import Benchmark

BASELINE_CONFIG = """\
import os, sys
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {home!r} + "/{{username}}"
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.args = ["--allow-root"] if os.geteuid() == 0 else []
"""


class LocalSpawnBench:
    def __init__(self) -> None:
        from kubelab.tests.up_support import UpProcess

        self.tmp = tempfile.TemporaryDirectory(prefix="kubelab-bench-local-")
        base = Path(self.tmp.name)
        baseline_state = base / "baseline"
        baseline_state.mkdir()
        (baseline_state / "jupyterhub_config.local.py").write_text(
            BASELINE_CONFIG.format(home=str(baseline_state / "users"))
        )
        self.baseline_hub = UpProcess(baseline_state)
        self.subject_hub = UpProcess(base / "subject")
        self.counter = itertools.count()
        self.statuses: dict[str, dict[int, int]] = {"baseline": {}, "subject": {}}

    def start(self) -> LocalSpawnBench:
        self.baseline_hub.start()
        self.subject_hub.start()
        return self

    def _spawn(self, hub: Any, side: str, options: dict[str, Any] | None) -> None:
        name = f"u{next(self.counter)}"
        hub.add_user(name)
        start = time.perf_counter()
        r = hub.api("POST", f"/users/{name}/server", json=options)
        if r.status_code == 202:
            while not hub.api("GET", f"/users/{name}").json()["servers"].get("", {}).get("ready"):
                if time.perf_counter() - start > 120:
                    raise RuntimeError(f"{side}: {name}'s server did not become ready")
                time.sleep(0.02)
        elif r.status_code != 201:
            raise RuntimeError(f"{side}: spawn failed: {r.status_code} {r.text}")
        counts = self.statuses[side]
        counts[r.status_code] = counts.get(r.status_code, 0) + 1

    def baseline(self) -> None:
        self._spawn(self.baseline_hub, "baseline", None)

    def subject(self) -> None:
        self._spawn(self.subject_hub, "subject", {"profile": "cpu"})

    def stop(self) -> None:
        try:
            for hub in (self.baseline_hub, self.subject_hub):
                if hub.proc is not None:
                    hub.stop()
                    left = hub.leftovers()
                    hub.kill()
                    if left:
                        print(f"bench_local: left running after Ctrl-C: {left}", file=sys.stderr)
        finally:
            self.tmp.cleanup()

    @staticmethod
    def _spawner_of(hub: Any) -> str:
        for path in sorted((hub.data_dir / "logs").glob("hub.log*")):
            for line in path.read_text(errors="replace").splitlines():
                if "Using Spawner:" in line:
                    return line.split("Using Spawner:", 1)[1].strip()
        return "?"

    def bench_extra(self) -> dict[str, Any]:
        return {
            "spawners": f"baseline {self._spawner_of(self.baseline_hub)}, "
                        f"subject {self._spawner_of(self.subject_hub)}",
            "spawn replies (status: count)": {k: dict(v) for k, v in self.statuses.items()},
            "cores": os.cpu_count(),
        }


def _setup() -> LocalSpawnBench:
    return LocalSpawnBench().start()


BENCHMARKS = [
    Benchmark(
        name="local spawner: spawn request → server ready (kubelab up)",
        baseline=lambda b: b.baseline(),
        subject=lambda b: b.subject(),
        baseline_label="JupyterHub SimpleLocalProcessSpawner, same jupyter-server",
        target=1.15,
        on="p50",
        repeat=12,
        warmup=1,
        setup=_setup,
        teardown=lambda b: b.stop(),
    ),
]
