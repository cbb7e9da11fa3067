"""`hydra/launcher=slurm`: hydra-submitit-launcher's Slurm launcher, with what a sweep needs
before and after `sbatch`.

Before: the request is checked against what `sinfo` says the cluster has (the partition exists; a
node of it has the CPUs, memory and GPUs one job asks for; several tasks per job only for
`trainer.strategy=multi_worker`), so a mistake is one line and exit 2 instead of a job that
Slurm refuses with a traceback or that waits in the queue for a node that does not exist.

After: submitit follows its jobs with `sacct`, which needs Slurm's accounting database
(slurmdbd). Without one, every poll fails and a job that ends without writing its result (killed,
out of memory, cancelled) would be waited for forever; here the jobs are followed with `squeue`
instead, and a job Slurm no longer knows counts as ended, so the launcher always returns.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from typing import Any, Sequence

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher

from dlx.errors import DlxError

log = logging.getLogger(__name__)


def _run(*command: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), capture_output=True, text=True, timeout=timeout)


def _strategy(config, overrides: Sequence[str]) -> str:
    chosen = str(config.trainer.strategy) if "trainer" in config else "default"
    for o in overrides:
        if o.startswith("trainer.strategy="):
            chosen = o.split("=", 1)[1]
    return chosen


def check_request(params: dict[str, Any], strategies: set[str]) -> None:
    """The job request against the cluster's partitions and nodes (`sinfo`): one DlxError naming the key."""
    for key, least in (("tasks_per_node", 1), ("cpus_per_task", 1), ("nodes", 1), ("timeout_min", 1), ("mem_gb", 0),
                       ("gpus_per_node", 0)):
        if params.get(key) is not None and params[key] < least:
            raise DlxError(f"hydra.launcher.{key}={params[key]}: expected {least} or more")
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        raise DlxError("hydra/launcher=slurm: no Slurm on this machine (sinfo/sbatch not found); "
                       "on one machine use hydra/launcher=joblib")
    try:
        listing = _run("sinfo", "--noheader", "-o", "%P|%c|%m|%G|%D")
    except subprocess.TimeoutExpired:
        raise DlxError("hydra/launcher=slurm: sinfo did not answer in 30 s (is slurmctld running?)") from None
    if listing.returncode != 0:
        raise DlxError(f"hydra/launcher=slurm: sinfo failed: {listing.stderr.strip() or listing.stdout.strip()}")
    nodes: dict[str, list[tuple[int, int, int, int]]] = {}
    default = None
    for line in listing.stdout.splitlines():
        name, cpus, mem, gres, count = (line.split("|") + [""] * 5)[:5]
        if name.endswith("*"):
            name = default = name[:-1]
        gpus = sum(int(n) for n in re.findall(r"\bgpu(?::[A-Za-z][\w.-]*)?:(\d+)", gres))  # gpu:4, gpu:a100:4(S:0-1)
        nodes.setdefault(name, []).append((int(cpus.rstrip("+") or 0), int(mem.rstrip("+") or 0), gpus, int(count or 0)))
    partition = params.get("partition") or default
    if partition is None:
        raise DlxError(f"hydra.launcher.partition: this cluster has no default partition; choose one of: {', '.join(nodes)}")
    if partition not in nodes:
        raise DlxError(f"hydra.launcher.partition={partition}: no such Slurm partition; partitions: {', '.join(nodes) or 'none'}")
    tasks = int(params.get("tasks_per_node") or 1)
    cpus = int(params.get("cpus_per_task") or 1)
    mem_mb = int(float(params.get("mem_gb") or 0) * 1024)
    gpus = int(params.get("gpus_per_node") or 0)
    asked_nodes = int(params.get("nodes") or 1)
    best_cpus = max(n[0] for n in nodes[partition])
    best_mem = max(n[1] for n in nodes[partition])
    best_gpus = max(n[2] for n in nodes[partition])
    total_nodes = sum(n[3] for n in nodes[partition])
    where = f"a node of partition {partition} has at most"
    if tasks * cpus > best_cpus:
        key = "tasks_per_node" if tasks > 1 else "cpus_per_task"
        raise DlxError(f"hydra.launcher.{key}: tasks_per_node={tasks} x cpus_per_task={cpus} CPUs, but {where} {best_cpus} CPUs")
    if mem_mb > best_mem:
        raise DlxError(f"hydra.launcher.mem_gb={params.get('mem_gb')}: {where} {best_mem / 1024:.1f} GB for jobs")
    if gpus > best_gpus:
        raise DlxError(f"hydra.launcher.gpus_per_node={gpus}: {where} {best_gpus} GPUs")
    if asked_nodes > total_nodes:
        raise DlxError(f"hydra.launcher.nodes={asked_nodes}: partition {partition} has {total_nodes} node(s)")
    processes = tasks * asked_nodes
    if processes > 1 and strategies != {"multi_worker"}:
        raise DlxError(f"hydra.launcher.tasks_per_node={tasks}, nodes={asked_nodes}: {processes} processes per job "
                       "train one model together only with trainer.strategy=multi_worker; otherwise keep one task per job")


class SqueueWatcher:
    """submitit's job watcher with `squeue` in place of `sacct` (clusters without accounting)."""

    def __init__(self, base):
        self.base = base

    def install(self) -> None:
        watcher = self.base
        original = type(watcher).update

        def update(this) -> None:
            to_check = {x.split("_")[0] for x in this._registered - this._finished}
            if not to_check:
                return
            this._num_calls += 1
            try:
                out = _run("squeue", "--noheader", "--states=all", "-o", "%i|%T|%N", "-j", ",".join(sorted(to_check)))
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.warning("squeue: %s; job states may be late", exc)
                this._last_status_check = time.time()
                return
            text = out.stdout if out.returncode == 0 else ""  # every job gone: "Invalid job id specified"
            info = this.read_info("JobID|State|NodeList\n" + text) if text.strip() else {}
            listed = {k.split("_")[0] for k in info}
            for job in this._registered - this._finished:
                if job not in info and job.split("_")[0] not in listed:
                    info[job] = {"JobID": job, "State": "GONE", "NodeList": ""}  # ended longer ago than Slurm remembers
            this._info_dict.update(info)
            this._last_status_check = time.time()
            for job in this._registered - this._finished:
                if this.is_done(job, mode="cache"):
                    this._finished.add(job)

        watcher.update = update.__get__(watcher)
        watcher._dlx_original_update = original


def accounting() -> bool:
    """Whether `sacct` answers here (Slurm keeps a job accounting database)."""
    try:
        return _run("sacct", "--noheader", "-j", "1", "-o", "JobID").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class SlurmLauncher(SubmititSlurmLauncher):
    """hydra-submitit-launcher's Slurm launcher, the request checked first and the jobs followed
    without accounting where there is none."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        from submitit.slurm.slurm import SlurmJob

        assert self.config is not None
        check_request(self.params, {_strategy(self.config, o) for o in job_overrides})
        if not accounting() and not hasattr(SlurmJob.watcher, "_dlx_original_update"):
            SqueueWatcher(SlurmJob.watcher).install()
            log.info("Slurm keeps no accounting here (sacct): jobs are followed with squeue")
        from submitit.core.utils import UncompletedJobError

        try:
            return super().launch(job_overrides, initial_job_idx)
        except UncompletedJobError as exc:  # killed, cancelled, out of memory: no result was written
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no result"
            job = re.search(r"Job (\d+(?:_\d+)?)", first)
            folder = str(self.params.get("submitit_folder", "")).replace("%j", job.group(1).split("_")[0] if job else "JOBID")
            raise DlxError(f"hydra/launcher=slurm: a job ended without a result ({first}); its log is in {folder}") from None
