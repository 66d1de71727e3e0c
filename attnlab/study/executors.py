"""Executors: run a plan's runs in this process, as N local processes, or as a Slurm array.

All three run the same plan into the same run folders under the same locks (one process
per run folder), and every run resumes from its own checkpoint, so an interrupted or
partly failed grid is completed by rerunning the same command, whichever executor ran it.

* ``InProcessExecutor``: one run after another (the data are opened once).
* ``ProcessExecutor(jobs, gpus)``: up to ``jobs`` runs at once, each ``attnlab train
  --resume`` in its own process on its own GPU (``CUDA_VISIBLE_DEVICES``), or on the CPU
  with the cores split between them; a log per run in its folder (``train.log``).
* ``SlurmExecutor``: a job array through submitit, one run per job; a preempted or
  timed-out job is requeued and resumes from its checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import ExperimentConfig, SlurmConfig
from ..engine import records
from ..errors import AttnlabError, LockError
from .plan import RunSpec

Log = Callable[[str], None]


def run_status(run_dir: Path) -> str:
    """``complete``, ``failed``, ``partial`` (has a checkpoint to resume from) or ``new``.

    Only a valid summary.json saying ``complete`` makes a run complete."""
    summary = run_dir / "summary.json"
    status = None
    if summary.is_file():
        try:
            status = json.loads(summary.read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            status = None
    if status == "complete":
        return "complete"
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return "failed" if status == "failed" else "partial"
    return "failed" if status == "failed" else "new"


def describe_run(spec: RunSpec) -> dict[str, Any]:
    """A run's state for ``attnlab ablate --status``: status, epochs, Top-1, holder if running."""
    from ..engine.lock import FolderLock

    state: dict[str, Any] = {"run": spec.name, "status": run_status(spec.run_dir), "epochs_done": 0,
                             "epochs": spec.cfg.train.epochs, "final_top1": None}
    if spec.run_dir.is_dir():
        try:
            with FolderLock(spec.run_dir):
                pass
        except LockError as err:
            state["status"] = "running"
            state["holder"] = str(err).split(" is in use by ", 1)[-1].split(";")[0]
    try:
        summary = json.loads((spec.run_dir / "summary.json").read_text())
        state["epochs_done"] = summary.get("epochs_done", 0)
        state["final_top1"] = (summary.get("final") or {}).get("val_top1")
    except (OSError, ValueError, AttributeError):
        pass
    return state


class Executor:
    """Runs a list of ``RunSpec`` (each resumable); raises ``AttnlabError`` naming failed runs."""

    def run(self, specs: Sequence[RunSpec], *, data: Any = None, log: Log = print) -> None:
        raise NotImplementedError


class InProcessExecutor(Executor):
    """One run after another in this process, sharing the opened dataset."""

    def run(self, specs: Sequence[RunSpec], *, data: Any = None, log: Log = print) -> None:
        from ..engine.trainer import Trainer

        progress = Progress(len(specs), log)
        for spec in specs:
            status = run_status(spec.run_dir)
            if status == "complete":
                progress.skip(spec)
                continue
            progress.start(spec, "resuming" if status in ("partial", "failed") else "training")
            summary = Trainer(spec.cfg, run_dir=spec.run_dir, resume=True, dataset=data).fit()
            progress.done(spec, summary)


class Progress:
    """One line per run with its state, and an ETA from the runs finished so far."""

    def __init__(self, total: int, log: Log, jobs: int = 1) -> None:
        self.total, self.log, self.jobs = total, log, jobs
        self.finished = 0
        self.durations: list[float] = []
        self.started: dict[str, float] = {}

    def _eta(self) -> str:
        left = self.total - self.finished
        if not self.durations or left <= 0:
            return ""
        seconds = sum(self.durations) / len(self.durations) * left / self.jobs
        return f", ETA {seconds / 60:.0f} min" if seconds >= 60 else f", ETA {seconds:.0f} s"

    def skip(self, spec: RunSpec) -> None:
        self.finished += 1
        self.log(f"[{self.finished}/{self.total}] {spec.name}: complete, skipped")

    def start(self, spec: RunSpec, what: str) -> None:
        self.started[spec.name] = time.perf_counter()
        self.log(f"[{self.finished + 1}/{self.total}] {spec.name}: {what}{self._eta()}")

    def done(self, spec: RunSpec, summary: dict[str, Any] | None, failed: str | None = None) -> None:
        self.finished += 1
        seconds = time.perf_counter() - self.started.pop(spec.name, time.perf_counter())
        if failed:
            self.log(f"    {spec.name}: FAILED after {seconds:.0f} s ({failed})")
            return
        self.durations.append(seconds)
        if summary:
            self.log(f"    {spec.name}: best val top-1 {summary['best']['val_top1']:.4f} (epoch "
                     f"{summary['best']['epoch']}), final {summary['final']['val_top1']:.4f}, "
                     f"{seconds:.0f} s{self._eta()}")


def write_run_config(spec: RunSpec) -> Path:
    """The run's resolved config where a worker process can read it (``<run>/run.yaml``)."""
    path = spec.run_dir / "run.yaml"
    records.write_config(path, spec.cfg)
    return path


class ProcessExecutor(Executor):
    """Up to ``jobs`` runs at once, each ``attnlab train --resume`` in its own process.

    ``gpus``: device ids handed out one per running job (``CUDA_VISIBLE_DEVICES``); without
    them, the CPU cores are split evenly between the jobs (``threads`` each)."""

    def __init__(self, jobs: int, gpus: Sequence[int] | None = None, threads: int | None = None,
                 poll_s: float = 0.5) -> None:
        if jobs < 1:
            raise AttnlabError(f"--jobs must be >= 1, got {jobs}")
        if gpus is not None and len(gpus) < jobs:
            raise AttnlabError(f"--jobs {jobs} needs {jobs} GPUs, --gpus lists {len(gpus)}: one device per job")
        self.jobs, self.gpus, self.poll_s = jobs, list(gpus) if gpus else None, poll_s
        self.threads = threads or max(1, (os.cpu_count() or 1) // jobs)

    def command(self, spec: RunSpec, config: Path) -> list[str]:
        return [sys.executable, "-m", "attnlab", "train", "--config", str(config),
                "--run-dir", str(spec.run_dir), "--resume", "train.progress=false"]

    def run(self, specs: Sequence[RunSpec], *, data: Any = None, log: Log = print) -> None:
        progress = Progress(len(specs), log, self.jobs)
        queue = []
        for spec in specs:
            if run_status(spec.run_dir) == "complete":
                progress.skip(spec)
            else:
                queue.append(spec)
        free = list(self.gpus) if self.gpus else [None] * self.jobs
        running: dict[str, tuple[subprocess.Popen, RunSpec, Any, Any]] = {}
        failed: list[str] = []
        try:
            while queue or running:
                while queue and free:
                    spec, device = queue.pop(0), free.pop(0)
                    config = write_run_config(spec)
                    env = {**os.environ, "ATTNLAB_THREADS": str(self.threads), "OMP_NUM_THREADS": str(self.threads)}
                    if device is not None:
                        env["CUDA_VISIBLE_DEVICES"] = str(device)
                    logfile = open(spec.run_dir / "train.log", "a")  # noqa: SIM115 - closed below
                    proc = subprocess.Popen(self.command(spec, config), stdout=logfile, stderr=subprocess.STDOUT,
                                            env=env)
                    running[spec.name] = (proc, spec, device, logfile)
                    where = f"GPU {device}" if device is not None else f"{self.threads} CPU thread(s)"
                    progress.start(spec, f"started (pid {proc.pid}, {where})")
                time.sleep(self.poll_s)
                for name, (proc, spec, device, logfile) in list(running.items()):
                    if proc.poll() is None:
                        continue
                    logfile.close()
                    del running[name]
                    free.append(device)
                    if proc.returncode == 0:
                        progress.done(spec, _summary(spec.run_dir))
                    else:
                        failed.append(name)
                        progress.done(spec, None, failed=f"exit {proc.returncode}, log {spec.run_dir / 'train.log'}")
        finally:
            for proc, _, _, logfile in running.values():  # interrupted: stop the workers we started
                proc.terminate()
                proc.wait()
                logfile.close()
        if failed:
            raise AttnlabError(f"{len(failed)} run(s) failed: {', '.join(failed)} (logs: <run>/train.log); "
                               "rerun the same command to resume them")


def _summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None


class TrainJob:
    """One run as a submitit job; ``checkpoint`` makes a preempted or timed-out job requeue
    itself, and the requeued job resumes from the run's last checkpoint."""

    def __init__(self, config: str, run_dir: str) -> None:
        self.config, self.run_dir = config, run_dir

    def __call__(self) -> str:
        from ..config import load_config
        from ..engine.trainer import train

        threads = os.environ.get("ATTNLAB_THREADS")
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        summary = train(load_config(self.config), run_dir=self.run_dir, resume=True, wait=True)
        return str((summary or {}).get("status", "complete"))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(TrainJob(self.config, self.run_dir))


class SlurmExecutor(Executor):
    """A job array through submitit (``cluster``: ``slurm``, or ``local``/``debug`` to test)."""

    def __init__(self, folder: str | Path, slurm: SlurmConfig, *, cluster: str | None = None,
                 wait: bool = True) -> None:
        self.folder, self.slurm, self.cluster, self.wait = Path(folder), slurm, cluster, wait
        self.jobs: list[Any] = []

    def executor(self) -> Any:
        try:
            import submitit
        except ImportError:
            raise AttnlabError("--launcher slurm needs submitit: pip install submitit") from None
        ex = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
        s = self.slurm
        params: dict[str, Any] = {"timeout_min": s.time_min, "cpus_per_task": s.cpus, "name": "attnlab"}
        if ex.cluster == "slurm":
            params.update(gpus_per_node=s.gpus, slurm_additional_parameters=dict(s.extra))
            if s.partition:
                params["slurm_partition"] = s.partition
            if s.account:
                params["slurm_account"] = s.account
            if s.mem_gb:
                params["mem_gb"] = s.mem_gb
            if s.max_parallel:
                params["slurm_array_parallelism"] = s.max_parallel
        ex.update_parameters(**params)
        return ex

    def run(self, specs: Sequence[RunSpec], *, data: Any = None, log: Log = print) -> None:
        todo = [s for s in specs if run_status(s.run_dir) != "complete"]
        for spec in specs:
            if spec not in todo:
                log(f"{spec.name}: complete, skipped")
        if not todo:
            return
        ex = self.executor()
        jobs_fns = [TrainJob(str(write_run_config(s)), str(s.run_dir)) for s in todo]
        with ex.batch():
            self.jobs = [ex.submit(fn) for fn in jobs_fns]
        for spec, job in zip(todo, self.jobs, strict=True):
            log(f"{spec.name}: submitted as job {job.job_id}")
        if not self.wait:
            log("submitted; `attnlab ablate --status DIR` shows progress, rerunning the same command "
                "resumes what did not finish")
            return
        failed = []
        for spec, job in zip(todo, self.jobs, strict=True):
            try:
                job.result()
                log(f"{spec.name}: done (job {job.job_id})")
            except Exception as err:  # noqa: BLE001 - submitit reports any job failure this way
                failed.append(spec.name)
                log(f"{spec.name}: FAILED (job {job.job_id}): {str(err).splitlines()[-1] if str(err) else err}")
        if failed:
            raise AttnlabError(f"{len(failed)} job(s) failed: {', '.join(failed)} (logs under {self.folder}); "
                               "rerun the same command to resume them")


def make_executor(kind: str, *, jobs: int = 1, gpus: Sequence[int] | None = None, out: Path | None = None,
                  cfg: ExperimentConfig | None = None, wait: bool = True) -> Executor:
    """The executor ``--launcher kind --jobs N --gpus ...`` asks for."""
    if kind == "local":
        return InProcessExecutor() if jobs == 1 and not gpus else ProcessExecutor(jobs, gpus)
    if kind in ("slurm", "submitit-local", "submitit-debug"):
        cluster = {"slurm": None, "submitit-local": "local", "submitit-debug": "debug"}[kind]
        return SlurmExecutor(Path(out or ".") / "slurm", cfg.slurm if cfg else SlurmConfig(), cluster=cluster,
                             wait=wait)
    raise AttnlabError(f"unknown launcher {kind!r}; use local or slurm")
