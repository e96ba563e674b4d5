"""The layout of a job's folder (``~/kubelab-jobs/NAME/``), in one place.

Every backend keeps a job's files in the same shape, so that the user finds them in the same
place whichever ran the job, and so that whoever reads them (the backends, the cell view, the lab
panel) asks this object rather than joining names itself::

    NAME/
      workspace/     the snapshot the job runs in (recreated for each run)
      outputs/       what the job writes ($KUBELAB_OUTPUT_DIR): kept
      metrics.jsonl  what kubelab.report() wrote ($KUBELAB_METRICS_FILE)
      logs.txt       local jobs: stdout and stderr
      logs/          Kubernetes jobs: each node's copy of its log (rank-<n>.txt)
      job.json       local jobs: the record; exit_code, cancelled: how a local job ended
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["JobFolder"]


@dataclass(frozen=True)
class JobFolder:
    """A job's folder; each attribute is one of its files or subfolders."""

    root: Path

    @classmethod
    def of_outputs(cls, output_dir: str | Path) -> JobFolder:
        """The folder of a job whose ``outputs/`` is *output_dir* (what :class:`JobInfo` carries)."""
        return cls(Path(output_dir).parent)

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def log(self) -> Path:
        return self.root / "logs.txt"

    @property
    def node_logs(self) -> Path:
        return self.root / "logs"

    @property
    def record(self) -> Path:
        return self.root / "job.json"

    @property
    def exit_code(self) -> Path:
        return self.root / "exit_code"

    @property
    def cancelled(self) -> Path:
        return self.root / "cancelled"
