"""`trainer.strategy=multi_worker`: one model trained data-parallel by several processes with
`tf.distribute.MultiWorkerMirroredStrategy`.

The processes are the tasks of one Slurm job (`hydra/launcher=slurm hydra.launcher.tasks_per_node=2`,
or `nodes`; the cluster comes from `SlurmClusterResolver`), or processes you start yourself with
`TF_CONFIG` set in each. Every process runs the same `dlx train`:

- `trainer.batch_size` is the global batch: each optimizer step averages the gradients of
  batch_size / N examples from each of the N processes, so the learning rate stays the one a
  single process would use with the same batch size (no scaling rule to apply);
- only the chief (Slurm task 0; TF_CONFIG's chief, or worker 0 when there is none) writes the
  run directory, checkpoints, TensorBoard and MLflow; the others write into a private temporary
  folder removed at the end, and after a Slurm requeue they continue from the chief's saved epoch;
- no wait is endless: the processes must all join within `trainer.collective_timeout_s`, and a
  process that dies later is noticed by TensorFlow's coordination service (heartbeats, seconds);
  either way the others stop with one line saying which process, instead of hanging.
"""

from __future__ import annotations

import json
import logging
import os
import re
from contextlib import contextmanager

from dlx.errors import DlxError

log = logging.getLogger(__name__)

CHIEF_RUN_DIR = None  # in a process other than the chief: the run directory the chief writes


def role(strategy: str) -> tuple[int, int] | None:
    """(rank, processes) when this process trains with others, after checking that the strategy
    and the way it was started agree; None when it trains alone."""
    place = cluster()
    if strategy == "multi_worker":
        if place is None:
            raise DlxError("trainer.strategy=multi_worker: this process has no cluster; start it as several Slurm tasks "
                           "(hydra/launcher=slurm hydra.launcher.tasks_per_node=2) or with TF_CONFIG set in each process")
        return place
    if place is not None and not os.environ.get("TF_CONFIG"):
        raise DlxError(f"this Slurm job step runs {place[1]} tasks: with trainer.strategy={strategy} each would train "
                       "the same model into the same directory; set trainer.strategy=multi_worker or run one task")
    return None


def cluster() -> tuple[int, int] | None:
    """(rank, number of processes) of this process in its multi-worker cluster, or None when it
    runs alone. No TensorFlow: it decides what the run may write before anything loads."""
    raw = os.environ.get("TF_CONFIG")
    if raw:
        try:
            spec = json.loads(raw)
            jobs = spec["cluster"]
            task = spec["task"]
            chiefs, workers = list(jobs.get("chief", [])), list(jobs.get("worker", []))
            kind, index = str(task["type"]), int(task["index"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DlxError(f"TF_CONFIG: expected {{'cluster': {{'worker': [host:port, ...]}}, 'task': {{'type': 'worker', "
                           f"'index': i}}}} ({exc})") from None
        if kind not in ("chief", "worker") or not 0 <= index < len(jobs.get(kind, [])):
            raise DlxError(f"TF_CONFIG: task {kind} {index} is not in its cluster ({len(chiefs)} chief, {len(workers)} worker)")
        for job in ("chief", "worker"):
            _check_addresses(job, jobs.get(job, []))
        return (0 if kind == "chief" else index + len(chiefs)), len(chiefs) + len(workers)
    tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or 1)
    if os.environ.get("SLURM_JOB_ID") and tasks > 1:
        return int(os.environ.get("SLURM_PROCID", 0)), tasks
    return None


def _check_addresses(job: str, tasks) -> None:
    """TF_CONFIG's addresses of one job: a list of host:port (TensorFlow fails on anything else
    with a traceback, or waits out the whole timeout for a port that cannot exist)."""
    if not isinstance(tasks, list):
        raise DlxError(f"TF_CONFIG: cluster.{job} must be a list of host:port, got {type(tasks).__name__}")
    for address in tasks:
        host, _, port = str(address).rpartition(":")
        if not isinstance(address, str) or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise DlxError(f"TF_CONFIG: cluster.{job} address {address!r}: expected host:port with a port in 1..65535")


def strategy(timeout_s: float):
    """The MultiWorkerMirroredStrategy of this process's cluster (TF_CONFIG or Slurm)."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    else:
        gpus = len(tf.config.list_physical_devices("GPU"))
        # ports from the job id, so that two multi-worker jobs sharing a node do not collide
        port = 20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000
        Resolver = tf.distribute.cluster_resolver.SlurmClusterResolver
        if gpus:
            resolver = Resolver(port_base=port, gpus_per_node=gpus, auto_set_gpu=True)
        else:  # the resolver steps through GPUs per task even without GPUs: one slot per task, none assigned
            slurm = Resolver(port_base=port, gpus_per_node=_tasks_per_node(), gpus_per_task=1, auto_set_gpu=False)
            spec = slurm.cluster_spec()  # also sets its task type and id
            # ... and then says each task has a GPU: the same cluster, with CPUs only
            resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
                spec, task_type=slurm.task_type, task_id=slurm.task_id, num_accelerators={}, rpc_layer="grpc")
    _coordinate(resolver, timeout_s)
    # no CommunicationOptions(timeout_seconds=...): TensorFlow starts a timer thread for every
    # collective op with a timeout, thousands a minute that live until it expires, and a long run
    # dies of it; a process that stops is found by the coordination service's heartbeats instead
    try:
        found = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError, tf.errors.AbortedError) as exc:
        spec = resolver.cluster_spec().as_dict()
        raise DlxError(f"trainer.strategy=multi_worker: the cluster {spec} did not come together within "
                       f"trainer.collective_timeout_s={timeout_s:g} s ({type(exc).__name__}): is every process started?") from None
    _patch_keras()
    return found


def _coordinate(resolver, timeout_s: float) -> None:
    """TensorFlow's coordination service as the strategy would set it up, but with a deadline for
    the processes to join (its own default waits an hour for one that never starts)."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    if context.context().coordination_service is not None:
        return
    spec = resolver.cluster_spec()
    jobs = [coordination_config_pb2.CoordinatedJob(name=j, num_tasks=spec.num_tasks(j)) for j in ("chief", "worker")
            if j in spec.jobs]
    ctx = context.context()
    ctx.configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec), coordinated_jobs=jobs,
        cluster_register_timeout_in_ms=int(timeout_s * 1000))
    # every process, the leader included, waits at registration for the others, up to that deadline
    ctx.coordination_service.cluster_register_with_barrier = True


@contextmanager
def peers_fail_cleanly(strategy, state_dir):
    """A process of the cluster that died or stopped answering ends the others' training with one
    line (which process, the epoch saved), not TensorFlow's collective-op traceback."""
    import tensorflow as tf

    if strategy is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return
    lost = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError, tf.errors.AbortedError)
    try:
        yield
    except lost as exc:
        from dlx.training import state as state_file

        resolver = strategy.cluster_resolver
        me = f"/job:{resolver.task_type}/replica:0/task:{resolver.task_id}"
        named = set(re.findall(r"/job:\w+/replica:\d+/task:\d+", exc.message)) - {me}
        who = sorted(named) or [exc.message.strip().splitlines()[0][:200]]
        raise DlxError(f"trainer.strategy=multi_worker: {', '.join(who)} stopped answering ({type(exc).__name__}); "
                       f"{state_file.saved_epoch(state_dir)}; start every process again with "
                       f"resume={state_dir.parent.parent} (a Slurm requeue does)") from None


def _tasks_per_node() -> int:
    """The most tasks of this job step on one node (SLURM_STEP_TASKS_PER_NODE, e.g. "2(x3),1")."""
    text = os.environ.get("SLURM_STEP_TASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE") or "1"
    return max(int(n) for n in re.findall(r"(\d+)(?:\(x\d+\))?", text))


def _patch_keras() -> None:
    """Two places where Keras 3's TensorFlow trainer breaks under MultiWorkerMirroredStrategy
    (keras-team/keras#20585, tensorflow/tensorflow#72388), mended for this process only:
    building the model all-reduces a whole data batch it only needs the shapes of, and the
    per-step logs (scalars) are averaged across workers along an axis 0 they do not have."""
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer, "_dlx_multi_worker", False):
        return
    original_reduce = tf_trainer.reduce_per_replica

    def first_replica(strategy, value):
        return strategy.experimental_local_results(value)[0] if isinstance(value, tf.distribute.DistributedValues) else value

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            def mean(v):
                rank = len(first_replica(strategy, v).shape)
                return strategy.reduce("MEAN", v, axis=0 if rank else None)

            return tree.map_structure(mean, values)
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(lambda v: first_replica(self.distribute_strategy, v), next(it))
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer._dlx_multi_worker = True
