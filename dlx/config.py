"""The typed config schema.

Every YAML file under ``conf/`` is merged onto one of these dataclasses (its ``defaults`` list
names the schema), so Hydra rejects unknown keys and values of the wrong type while it composes
the config, before any TensorFlow is imported. Keep this module free of heavy imports: the CLI
loads it on every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, OmegaConf

from dlx.ranges import ranged


# --------------------------------------------------------------------------- choices
class Scaling(Enum):
    unit = "unit"  # pixels to [0, 1]
    zscore = "zscore"  # (x - mean) / std, statistics of the training split
    none = "none"  # raw pixel values


class OptimizerName(Enum):
    sgd = "sgd"
    momentum = "momentum"
    nesterov = "nesterov"
    adagrad = "adagrad"
    rmsprop = "rmsprop"
    adam = "adam"
    newton = "newton"  # Newton's method (logistic_regression): full-batch steps on the exact Hessian


class Schedule(Enum):
    constant = "constant"
    exponential = "exponential"  # lr * decay_rate ** (step / decay_steps)
    step = "step"  # lr * decay_rate ** floor(epoch / step_epochs)
    cosine = "cosine"  # cosine decay to 0 over the whole run


class Device(Enum):
    auto = "auto"  # GPU when one is visible, else CPU
    cpu = "cpu"
    gpu = "gpu"


class Strategy(Enum):
    default = "default"  # one device
    mirrored = "mirrored"  # tf.distribute.MirroredStrategy: one replica per visible GPU, in one job
    multi_worker = "multi_worker"  # tf.distribute.MultiWorkerMirroredStrategy: several processes (Slurm tasks or TF_CONFIG)


class Precision(Enum):
    float32 = "float32"
    mixed_float16 = "mixed_float16"  # float16 compute, float32 variables (GPU only; CPU falls back to float32)


class Direction(Enum):
    minimize = "minimize"
    maximize = "maximize"


class Pruner(Enum):
    none = "none"
    median = "median"  # stop a trial whose value at epoch k is worse than the median of earlier trials at k
    halving = "halving"  # successive halving (asynchronous)


class StopRule(Enum):
    epochs = "epochs"  # keras EarlyStopping: `patience` epochs without a `min_delta` improvement
    book = "book"  # the textbook's rule: validate every N batches, patience counted in batches


class Side(Enum):
    pre = "pre"
    post = "post"


class Color(Enum):
    rgb = "rgb"
    grayscale = "grayscale"


class BadFile(Enum):
    skip = "skip"  # counted, listed in the log, left out
    error = "error"  # the first one stops the run


class Task(Enum):
    classification = "classification"
    regression = "regression"


@dataclass
class AugmentConfig:
    """Random changes to training images each time they are drawn (Keras preprocessing layers;
    never to validation or test images). 0 / false = off."""

    flip: bool = False  # mirror left-right
    rotation: float = ranged(0.0, "[0, 1]")  # fraction of a full turn, either way
    zoom: float = ranged(0.0, "[0, 0.9]")  # fraction in or out
    contrast: float = ranged(0.0, "[0, 1]")  # contrast factor range 1 +- this


# --------------------------------------------------------------------------- dataset
@dataclass
class DatasetConfig:
    name: str = MISSING
    # directory with the dataset files; null = download into the cache (DLX_DATA_DIR, ~/.cache/dlx)
    path: Optional[str] = None
    scaling: Scaling = Scaling.unit
    # validation examples taken from the *end* of the training split (book convention: last 5,000)
    val_size: int = ranged(5000, "[1, 1e9]")
    # held-out test examples, for datasets without an official test split (digits)
    test_size: int = ranged(0, "[0, 1e9]")
    # keep only the first N training examples (quick runs, tests); null = all
    subset: Optional[int] = ranged(None, "[1, 1e12]")
    # labelled images collected by `dlx serve` (POST /v1/samples), added to the training split:
    # "samples" = those of the default serve.state_dir (outputs/serve), or a state directory
    extra: Optional[str] = None
    # generated datasets (synthetic_line, blobs2d, cancer_synthetic): size, noise and their own seed
    n_samples: Optional[int] = ranged(None, "[1, 1e9]")  # null = the dataset's book size
    noise: float = ranged(10.0, "[0, 1e9]")
    data_seed: int = ranged(0, "[0, 4294967295]")
    # text datasets: the N most frequent training words are the features (word counts)
    vocab_size: int = ranged(3000, "[3, 1e8]")
    # text_folder: the class folders to use (aclImdb: [neg, pos]); null = every folder with .txt files
    classes: Optional[List[str]] = None
    # text as word ids (model=lstm_sentiment): sequences padded/truncated to max_length words,
    # pad id 0, out-of-vocabulary id 1; pre = at the start, as keras.utils.pad_sequences
    max_length: int = ranged(200, "[1, 1e6]")
    padding: Side = Side.pre
    truncating: Side = Side.pre
    # character corpora (tinyshakespeare, any UTF-8 file): training windows of seq_length characters
    seq_length: int = ranged(100, "[1, 1e7]")
    # image_folder and csv: the fractions held out for validation and test (stratified, drawn with
    # data_seed, recorded in the run's split.json) where the data has no val/ and test/ parts of its own
    val_split: float = ranged(0.1, "[0, 0.9]")
    test_split: float = ranged(0.1, "[0, 0.9]")
    # image_folder: [height, width] the images are resized to; null = their median size, at most 64 a side
    image_size: Optional[List[int]] = ranged(None, "[1, 4096]")
    color: Color = Color.rgb
    on_bad_file: BadFile = BadFile.skip  # an unreadable or non-image file
    # image_folder: decoded images kept in this file (tf.data cache) after the first epoch; null = decode each epoch
    cache: Optional[str] = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # image datasets (image_folder, cifar10, mnist, ...)
    # csv: the column to predict; classification (any values: the classes) or regression (numbers)
    target: Optional[str] = None
    task: Task = Task.classification
    # csv: columns whose type inference should not decide (numbers as categories, ...); columns to leave out
    categorical: Optional[List[str]] = None
    numeric: Optional[List[str]] = None
    drop: List[str] = field(default_factory=list)


# --------------------------------------------------------------------------- optimizer
@dataclass
class OptimizerConfig:
    name: OptimizerName = MISSING
    lr: float = ranged(1e-3, "(0, 100]")
    momentum: float = ranged(0.0, "[0, 1)")  # momentum / nesterov / rmsprop
    beta_1: float = ranged(0.9, "[0, 1)")  # adam
    beta_2: float = ranged(0.999, "[0, 1)")  # adam
    epsilon: float = ranged(1e-7, "(0, 1]")
    weight_decay: Optional[float] = ranged(None, "[0, 1]")  # decoupled weight decay (AdamW-style); null = off
    clipnorm: Optional[float] = ranged(None, "(0, 1e9]")
    clipvalue: Optional[float] = ranged(None, "(0, 1e9]")
    schedule: Schedule = Schedule.constant
    decay_rate: float = ranged(0.96, "(0, 1e38]")  # exponential / step; > 1 grows the rate (up to float32's largest)
    decay_steps: int = ranged(1000, "[1, 1e12]")  # exponential: optimizer steps per decay
    step_epochs: int = ranged(10, "[1, 1e6]")  # step: epochs per decay
    warmup_epochs: int = ranged(0, "[0, 1e6]")  # linear warm-up before the schedule
    # newton: stop when the gradient's max-norm is below tol; damping is added to the Hessian
    # diagonal; the step is solved by conjugate gradients on Hessian-vector products (at most max_cg)
    tol: float = ranged(1e-5, "(0, 1]")
    damping: float = ranged(0.0, "[0, 1e9]")
    max_cg: int = ranged(200, "[1, 1e6]")
    hessian_fraction: float = ranged(1.0, "(0, 1]")  # < 1: curvature from that fraction of the examples (subsampled Newton)


# --------------------------------------------------------------------------- regularization
@dataclass
class RegularizationConfig:
    """Penalties on every dense/conv kernel, and dropout after every hidden layer.

    One schema for all options, so they combine: ``regularization=l2 regularization.dropout=0.5``.
    """

    name: str = MISSING
    l1: float = ranged(0.0, "[0, 100]")
    l2: float = ranged(0.0, "[0, 100]")
    dropout: float = ranged(0.0, "[0, 1)")


# --------------------------------------------------------------------------- trainer
@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = "val_loss"
    rule: StopRule = StopRule.epochs
    # rule=epochs: epochs without improvement before stopping; null = 5, or a twentieth of the
    # epochs when that is more (the many short epochs of a small training set)
    patience: Optional[int] = ranged(None, "[0, 1e6]")
    min_delta: float = ranged(0.0, "[0, 1e9]")  # rule=epochs
    # rule=book: validate every `eval_every_batches`; an evaluation improves when it beats the best
    # by the ratio (best/current for losses, current/best for scores; the first one always does);
    # stop once `patience_batches` batches have passed since the last improvement
    patience_batches: int = ranged(3000, "[1, 1e12]")
    eval_every_batches: int = ranged(50, "[1, 1e12]")
    improvement_ratio: float = ranged(1.005, "[1, 100]")


@dataclass
class TrainerConfig:
    # null = 20, or on a small training set as many as `min_steps` optimizer steps need (digits: 10
    # batches per epoch); full-batch fits (Newton) take 20
    epochs: Optional[int] = ranged(None, "[1, 1e6]")
    min_steps: int = ranged(3000, "[0, 1e9]")
    batch_size: int = ranged(128, "[1, 1e8]")
    # validation, test and prediction batches (no gradients: a larger batch only runs faster);
    # null = trainer.batch_size, raised to what 4 MiB of inputs hold, at most 4096
    eval_batch_size: Optional[int] = ranged(None, "[1, 1e8]")
    seed: int = ranged(42, "[0, 4294967295]")
    device: Device = Device.auto
    # batches run per tf.function call; > 1 cuts Python overhead per step (see benchmarks/);
    # null = the family's `steps_per_execution` (16, recurrent families 1)
    steps_per_execution: Optional[int] = ranged(None, "[1, 1e6]")
    # XLA-compile the train step; null = Keras' "auto"
    jit_compile: Optional[bool] = None
    shuffle: bool = True
    # best/last checkpoints are kept in memory every epoch and written at most this often (and at the end)
    checkpoint_interval_s: float = ranged(60.0, "[0, 1e8]")
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    # GPU indices this run may use (null = every visible GPU; in a parallel sweep, one GPU per job)
    devices: Optional[List[int]] = None
    # bit-identical results for the same seed on CPU (tf.config.experimental.enable_op_determinism; slower)
    deterministic: bool = False
    strategy: Strategy = Strategy.default
    # trainer.strategy=multi_worker: how long a process waits for the others to join the cluster
    # (one that dies later is noticed by heartbeats within seconds); never an endless wait
    collective_timeout_s: float = ranged(300.0, "[1, 86400]")
    precision: Precision = Precision.float32
    progress: bool = True  # Keras' per-batch progress bar when stdout is a terminal
    # TensorFlow's CPU threads (within and across ops); null = TensorFlow's choice (every core), or
    # for each job of a parallel local sweep (joblib), the cores divided among the jobs running at once
    threads: Optional[int] = ranged(None, "[1, 4096]")


# --------------------------------------------------------------------------- logger
@dataclass
class MlflowConfig:
    enabled: bool = True
    # null = $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db under the working directory
    tracking_uri: Optional[str] = None
    experiment: str = "dlx"


@dataclass
class LoggerConfig:
    name: str = MISSING
    tensorboard: bool = True
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


# --------------------------------------------------------------------------- sweeps
@dataclass
class SweepConfig:
    """An Optuna search run by dlx's Hydra sweeper (hydra_plugins/dlx_optuna_sweeper)."""

    name: str = MISSING
    # what the search optimises: trainer.early_stopping.monitor's best value; direction null =
    # maximize for scores (accuracy, AUC, ...), minimize for losses
    direction: Optional[Direction] = None
    n_trials: int = ranged(20, "[1, 1e6]")
    n_jobs: int = ranged(1, "[1, 4096]")  # trials launched together (run in parallel by a parallel launcher)
    # tpe | random | cmaes | grid | qmc | gp, or {_target_: optuna.samplers.NAME, ...its arguments};
    # tpe with n_jobs > 1 uses constant_liar (trials running at once do not all try the same point)
    sampler: Any = "tpe"
    seed: int = ranged(0, "[0, 4294967295]")
    pruner: Pruner = Pruner.none
    startup_trials: int = ranged(2, "[0, 1e6]")  # pruner=median: trials that are never pruned, to build the median
    warmup_epochs: int = ranged(1, "[0, 1e6]")  # pruner=median: epochs of every trial that are never pruned
    # null = sqlite:///<sweep dir>/optuna.db; an RDB URL (postgresql://...) or journal:PATH (a journal
    # file, safe on NFS: Optuna's advice for many processes on many hosts)
    storage: Optional[str] = None
    resume: bool = False  # continue the study in hydra.sweep.dir (finished trials kept)
    # search space: config key -> {type: float|int|categorical, low, high, log, step, choices}
    params: Dict[str, Any] = field(default_factory=dict)
    enqueue: List[Any] = field(default_factory=list)  # parameter sets tried first, in order
    trial: Optional[int] = ranged(None, "[0, 1e9]")  # set by the sweeper for each job: the Optuna trial number


# --------------------------------------------------------------------------- commands
@dataclass
class TrainConfig:
    dataset: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    regularization: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    # free-form labels: MLflow tags; experiments/ presets keep the book's reported numbers here
    tags: Dict[str, Any] = field(default_factory=dict)
    # DIR (or last: the newest run in outputs/): continue that killed run in its own directory;
    # true (multirun): skip finished jobs and continue killed ones of the sweep in hydra.sweep.dir
    resume: Optional[str] = None
    # an Optuna search (`dlx train -m sweep=NAME`, conf/sweep/NAME.yaml); null otherwise
    sweep: Optional[SweepConfig] = None


@dataclass
class EvalConfig:
    run: str = MISSING  # a training run directory
    split: str = "test"  # test | val
    batch_size: Optional[int] = ranged(None, "[1, 1e8]")  # null = the run's trainer.eval_batch_size (identical numbers)


@dataclass
class SampleConfig:
    run: str = MISSING  # a training run directory of a family that generates (dlx sample --help)
    seed: int = ranged(0, "[0, 4294967295]")  # the same seed draws the same samples
    out: Optional[str] = None  # directory for the PNGs; null = <run>/samples
    # rbm / dbn: Gibbs chains, one column each; a frame (row) every `steps_between` Gibbs steps
    n_chains: int = ranged(20, "[1, 1e5]")
    n_frames: int = ranged(10, "[1, 1e5]")
    steps_between: int = ranged(1000, "[1, 1e9]")
    start: str = "test"  # test: chains start at test images; noise: at uniform random pixels
    # autoencoders: this many original / corrupted / reconstructed triplets, and up to `n_filters` filters
    n: int = ranged(10, "[1, 1e6]")  # captioning: images captioned
    n_filters: int = ranged(100, "[1, 1e6]")
    # char_rnn: `length` characters after `prime` (null = a newline, or the vocabulary's first
    # character); temperature 0 = greedy; top_k > 0 samples among the k likeliest only
    prime: Optional[str] = None
    length: int = ranged(500, "[1, 1e8]")
    temperature: float = ranged(1.0, "[0, 100]")
    top_k: int = ranged(0, "[0, 1e7]")
    # captioning: images from this split; beam width (null = the run's model.beam_width)
    split: str = "val"
    beam_width: Optional[int] = ranged(None, "[1, 1000]")


@dataclass
class PredictConfig:
    run: str = MISSING  # a training run directory
    inputs: str = MISSING  # a file, a directory or a glob of image files
    top_k: int = ranged(1, "[1, 1e7]")


class Auth(Enum):
    hmac = "hmac"  # every /v1/ request signed with a key from `dlx users add`
    none = "none"  # no signing: a local demo, only on 127.0.0.1


class Worker(Enum):
    thread = "thread"
    none = "none"


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = ranged(8000, "[1, 65535]")
    auth: Auth = Auth.hmac
    # users.db + server.key (keys), samples/ + samples.db (collected labelled images)
    state_dir: str = "outputs/serve"
    max_upload_bytes: int = ranged(2_000_000, "[1, 1e11]")  # larger requests get 413
    max_batch: int = ranged(64, "[1, 1e6]")  # inputs per request
    # pixels of one uploaded image, and of all images of a request, read from their headers before
    # any decoding (larger: 413)
    max_pixels: int = ranged(4_000_000, "[1, 1e11]")
    max_request_pixels: int = ranged(16_000_000, "[1, 1e12]")
    timeout_s: float = ranged(10.0, "(0, 1e6]")  # per prediction; slower gets 504
    predict_per_s: float = ranged(50.0, "(0, 1e6]")  # predict requests per second per key (a burst of as many); more: 429
    max_jobs_per_key: int = ranged(2, "[1, 1e6]")  # jobs a key may have queued or running; more: 429
    job_timeout_s: float = ranged(3600.0, "(0, 1e8]")  # a training job's wall-clock limit; its run ends FAILED
    # TensorFlow threads of a training job (its trainer.threads unless it sets one); null = half the
    # cores: the server keeps the rest for its requests
    job_threads: Optional[int] = ranged(None, "[1, 4096]")
    # who runs /v1/jobs: a worker thread in the server, or none (`dlx worker` processes instead)
    worker: Worker = Worker.thread
    # model=models:/NAME@ALIAS: how often to look for a newly promoted version (POST /v1/reload: now)
    poll_s: float = ranged(30.0, "(0, 1e8]")
    tracking_uri: Optional[str] = None  # of the model registry; null = as dlx train


@dataclass
class ServeConfig:
    run: Optional[str] = None  # a training run directory (an image or tabular classifier)
    # or a registered model: models:/NAME@champion (followed: a newly promoted champion is loaded)
    model: Optional[str] = None
    serve: ServeSettings = field(default_factory=ServeSettings)


@dataclass
class PromoteConfig:
    run: str = MISSING  # the candidate: a finished training run directory, or runs:/RUN_ID of the tracking server
    name: str = "dlx"  # the registered model's name in MLflow's model registry
    alias: str = "champion"
    tracking_uri: Optional[str] = None  # null = $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db


SCHEMAS: dict[str, Any] = {
    "dataset": DatasetConfig, "optimizer": OptimizerConfig, "regularization": RegularizationConfig,
    "trainer": TrainerConfig, "logger": LoggerConfig,
}  # the model group's schemas are the families' own (dlx/families/)
COMMANDS = {"train": TrainConfig, "eval": EvalConfig, "predict": PredictConfig, "sample": SampleConfig,
            "serve": ServeConfig, "promote": PromoteConfig}


def higher_is_better(metric: str) -> bool:
    """True for scores (accuracy, AUC, R², BLEU, ...), False for losses and errors."""
    return any(s in metric for s in ("acc", "auc", "precision", "recall", "r2", "bleu"))


def plain(cfg) -> dict[str, Any]:
    """The composed config as plain values (enums as their names), the form saved in the run dir."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def ns(tree: Any) -> Any:
    """Attribute access over a plain dict tree (`cfg.model.hidden`), for builders."""
    if isinstance(tree, dict):
        return SimpleNamespace(**{k: ns(v) for k, v in tree.items()})
    if isinstance(tree, list):
        return [ns(v) for v in tree]
    return tree


def experiments_dir() -> Path:
    """``experiments/`` of the source tree, or the copy the wheel carries inside the package."""
    here = Path(__file__).resolve().parent
    inside = here / "experiments"
    return inside if inside.is_dir() else here.parent / "experiments"


def conf_dir() -> Path:
    """``conf/`` of the source tree, or the copy the wheel carries inside the package."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"dlx configs not found next to {here}")
