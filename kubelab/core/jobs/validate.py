"""Check a submission against the admin config before anything is created.

Each check raises one :class:`~kubelab.core.jobs.errors.NotAllowed` subclass whose message says
what the limit is and what was asked, so that the user can fix the cell without asking the admin.
The Kubernetes API server enforces the same limits again (ResourceQuota, admission): this is the
friendly first line, not the only one.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubelab.core.access import granted
from kubelab.core.config import Dataset, GpuType, Jobs, pattern_fullmatch
from kubelab.core.jobs.context import JobContext
from kubelab.core.jobs.errors import DatasetNotAllowed, ImageNotAllowed, QuotaExceeded
from kubelab.core.jobs.types import JobSpec
from kubelab.core.quota import GpuQuota
from kubelab.core.text import gpus_text, shorten

__all__ = ["Resolved", "validate"]


@dataclass(frozen=True)
class Resolved:
    """What a valid spec resolves to: the image to run and the datasets to mount."""

    image: str | None
    datasets: tuple[Dataset, ...]
    gpu_type: GpuType | None
    jobs: Jobs


def validate(spec: JobSpec, ctx: JobContext, *, gpus_in_use: int = 0) -> Resolved:
    """Check *spec* for *ctx*'s user; *gpus_in_use* counts the GPUs their running jobs hold.

    Raises :class:`QuotaExceeded`, :class:`DatasetNotAllowed` or :class:`ImageNotAllowed`.
    """
    config = ctx.config
    jobs = config.jobs if config else Jobs()
    gpu_type = config.gpu_types.get(ctx.gpu_type) if config and ctx.gpu_type else None

    if spec.nodes > jobs.max_nodes:
        raise QuotaExceeded(f"{spec.nodes} nodes asked, a job may use at most {jobs.max_nodes}")
    total = spec.total_gpus
    if total > jobs.max_gpus_per_job:
        what = (f"{gpus_text(spec.gpus)} × {spec.nodes} nodes = {total}" if spec.nodes > 1
                else gpus_text(total))
        raise QuotaExceeded(f"{what} asked, a job may use at most {jobs.max_gpus_per_job}")
    if gpu_type is not None and gpu_type.max_per_node is not None and spec.gpus > gpu_type.max_per_node:
        raise QuotaExceeded(
            f"{gpus_text(spec.gpus)} per node asked, a {gpu_type.display_name} node has "
            f"{gpu_type.max_per_node}; use --nodes to spread the job"
        )
    quota = GpuQuota.of(config, ctx.groups) if config is not None and total else None
    if quota is not None and (breach := quota.breach(total, in_use=gpus_in_use)) is not None:
        label = "team" if breach.scope == "team" else "per-user"
        used = f", {gpus_in_use} in use by your running jobs" if gpus_in_use else ""
        raise QuotaExceeded(
            f"{gpus_text(total)} asked{used}: over the {label} GPU quota of {breach.limit} "
            f"for team {quota.team!r}"
        )

    datasets: list[Dataset] = []
    for data_name in dict.fromkeys(spec.data):
        dataset = config.dataset(data_name) if config else None
        if dataset is None:
            known = _granted(ctx)
            hint = f"; available: {', '.join(known)}" if known else "; no datasets are configured"
            raise DatasetNotAllowed(f"unknown dataset {shorten(data_name)}{hint}")
        if not granted(dataset.groups, ctx.groups) and data_name not in ctx.notebook_datasets:
            raise DatasetNotAllowed(
                f"dataset {shorten(data_name)} is for group(s) {', '.join(dataset.groups)}; "
                f"you are not in any of them"
            )
        datasets.append(dataset)

    image = spec.image or ctx.image
    if spec.image is not None and spec.image != ctx.image:
        if not any(pattern_fullmatch(p, spec.image) for p in jobs.images):
            allowed = ("images matching " + " or ".join(repr(p) for p in jobs.images)
                       if jobs.images else "only the notebook's own image")
            raise ImageNotAllowed(f"image {shorten(spec.image)} is not allowed for jobs; allowed: {allowed}")
    return Resolved(image=image, datasets=tuple(datasets), gpu_type=gpu_type, jobs=jobs)


def _granted(ctx: JobContext) -> list[str]:
    if ctx.config is None:
        return []
    return [d.name for d in ctx.config.datasets
            if granted(d.groups, ctx.groups) or d.name in ctx.notebook_datasets]
