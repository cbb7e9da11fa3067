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
from typing import Any, ClassVar, Dict, List, Optional

from omegaconf import MISSING

from dlx.errors import DlxError


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


class StopRule(Enum):
    epochs = "epochs"  # keras EarlyStopping: `patience` epochs without a `min_delta` improvement
    book = "book"  # the textbook's rule: validate every N batches, patience counted in batches


class Solver(Enum):
    normal_equation = "normal_equation"  # closed form from one streaming pass of X^T X, X^T y
    gd = "gd"  # gradient descent with the configured optimizer (trainer.batch_size=1: per sample)


class Covariance(Enum):
    shared = "shared"  # one covariance for all classes: linear boundaries (LDA)
    per_class = "per_class"  # one per class: quadratic boundaries (QDA)


class Event(Enum):
    bernoulli = "bernoulli"  # word present / absent (x > binarize)
    multinomial = "multinomial"  # word counts


class Kernel(Enum):
    linear = "linear"
    poly = "poly"
    rbf = "rbf"


class Padding(Enum):
    same = "same"
    valid = "valid"


# --------------------------------------------------------------------------- dataset
@dataclass
class DatasetConfig:
    name: str = MISSING
    # directory with the dataset files; null = download into the cache (DLX_DATA_DIR, ~/.cache/dlx)
    path: Optional[str] = None
    scaling: Scaling = Scaling.unit
    # validation examples taken from the *end* of the training split (book convention: last 5,000)
    val_size: int = 5000
    # held-out test examples, for datasets without an official test split (digits)
    test_size: int = 0
    # keep only the first N training examples (quick runs, tests); null = all
    subset: Optional[int] = None
    # generated datasets (synthetic_line, blobs2d, cancer_synthetic): size, noise and their own seed
    n_samples: Optional[int] = None  # null = the dataset's book size
    noise: float = 10.0
    data_seed: int = 0
    # text datasets: the N most frequent training words are the features (word counts)
    vocab_size: int = 3000
    # text_folder: the class folders to use (aclImdb: [neg, pos]); null = every folder with .txt files
    classes: Optional[List[str]] = None


# --------------------------------------------------------------------------- models
# Each model schema knows its task and checks what it is given (`check`), so a family that cannot
# use a dataset, a penalty or an optimizer fails in the CLI before TensorFlow is imported.
def check_penalties(family: str, reg, allowed: tuple[str, ...], own: str = "") -> None:
    """A family that has no use for a configured penalty says so instead of ignoring it."""
    for key in ("l1", "l2", "dropout"):
        if getattr(reg, key) and key not in allowed:
            hint = f"; it regularises through {own}" if own else (f"; it supports {', '.join(allowed)}" if allowed else "")
            raise DlxError(f"regularization.{key}: model={family} has no {key} penalty{hint}")


def positive(key: str, value: float, what: str = "a positive value") -> None:
    if not value > 0:
        raise DlxError(f"{key}: expected {what}, got {value}")


class Family:
    task: ClassVar[str] = "classification"  # or "regression": the dataset's target must match
    newton: ClassVar[bool] = False  # optimizer=newton applies
    images_only: ClassVar[bool] = False

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        """Family-specific checks of the composed config (plain values)."""


def check_model(cfg, reg, optimizer, data) -> None:
    """Can `model=cfg.name` train on this data with this penalty and optimizer? Raises DlxError."""
    family: Any = SCHEMAS["model"].get(cfg.name, Family)
    spec = data.spec
    if spec.task != family.task:
        kind = "a classifier" if family.task == "classification" else "a regression model"
        target = "class labels" if spec.task == "classification" else "a real-valued target"
        raise DlxError(f"model={cfg.name} is {kind} but dataset={spec.name} has {target}")
    if family.images_only and spec.kind != "image":
        raise DlxError(f"model={cfg.name} needs images, but dataset={spec.name} is {spec.kind} data (try model=mlp)")
    if str(optimizer.name) == "newton" and not family.newton:
        raise DlxError(f"optimizer=newton: Newton's method is implemented for model=logistic_regression, "
                       f"not model={cfg.name} (use sgd, adam, ...)")
    family.check(cfg, reg, optimizer, data)


@dataclass
class SoftmaxConfig(Family):
    """Multinomial logistic regression: one dense layer and a softmax."""

    name: str = "softmax"
    zero_init: bool = False  # the book initialises W and b to zeros


@dataclass
class MLPConfig(Family):
    name: str = "mlp"
    hidden: List[int] = field(default_factory=lambda: [256])
    activation: str = "relu"
    batch_norm: bool = False


@dataclass
class ConvLayer:
    filters: int = MISSING
    kernel: int = 5
    padding: Padding = Padding.same
    pool: int = 2  # max-pool size after the conv; 1 = no pooling


@dataclass
class CNNConfig(Family):
    """LeNet-style: conv/pool stacks, then dense layers, then softmax."""

    images_only: ClassVar[bool] = True

    name: str = "cnn"
    conv: List[ConvLayer] = field(
        default_factory=lambda: [ConvLayer(filters=6), ConvLayer(filters=16)]
    )
    dense: List[int] = field(default_factory=lambda: [120, 84])
    activation: str = "relu"


@dataclass
class LinearRegressionConfig(Family):
    task: ClassVar[str] = "regression"
    name: str = "linear_regression"
    solver: Solver = Solver.normal_equation
    degree: int = 1  # > 1 adds x^2 .. x^degree of every feature (no cross terms)

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        positive("model.degree", cfg.degree, "1 or more")
        closed = str(cfg.solver) == "normal_equation"
        check_penalties("linear_regression" + (" (normal equation)" if closed else ""), reg, ("l2",) if closed else ("l1", "l2"))


@dataclass
class LogisticRegressionConfig(Family):
    """Binary (sigmoid) or multinomial (softmax) logistic regression; `optimizer=newton` or any SGD one."""

    newton: ClassVar[bool] = True
    name: str = "logistic_regression"
    zero_init: bool = True

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        if str(optimizer.name) == "newton":
            check_penalties("logistic_regression with optimizer=newton", reg, ("l2",))
            positive("optimizer.tol", optimizer.tol)
            positive("optimizer.max_cg", optimizer.max_cg, "1 or more")
            if not 0 < optimizer.hessian_fraction <= 1:
                raise DlxError(f"optimizer.hessian_fraction: expected a fraction in (0, 1], got {optimizer.hessian_fraction}")
        else:
            check_penalties("logistic_regression", reg, ("l1", "l2"))


@dataclass
class GDAConfig(Family):
    name: str = "gda"
    covariance: Covariance = Covariance.shared
    # added to the covariance diagonal, times the mean feature variance: keeps constant pixels invertible
    reg_covar: float = 1e-4

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_penalties("gda", reg, (), own="model.reg_covar")
        if cfg.reg_covar < 0:
            raise DlxError(f"model.reg_covar: expected >= 0, got {cfg.reg_covar}")


@dataclass
class NaiveBayesConfig(Family):
    name: str = "naive_bayes"
    event: Event = Event.multinomial
    alpha: float = 1.0  # additive (Laplace) smoothing
    binarize: float = 0.0  # bernoulli: a feature is "on" when x > binarize

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_penalties("naive_bayes", reg, (), own="model.alpha")
        positive("model.alpha", cfg.alpha, "a positive smoothing count")
        if str(cfg.event) == "multinomial" and float(data.train.x.min()) < 0:
            raise DlxError(f"model.event=multinomial needs non-negative feature counts, but dataset={data.spec.name} "
                           f"(scaling={data.spec.scaling}) has negative values; use dataset.scaling=none or unit, or event=bernoulli")


@dataclass
class SVMConfig(Family):
    """Soft-margin SVM trained by SMO (LIBSVM's second-order working-set selection), one-vs-one."""

    name: str = "svm"
    kernel: Kernel = Kernel.rbf
    C: float = 1.0
    gamma: str = "scale"  # scale = 1 / (features * X.var()), auto = 1 / features, or a number
    degree: int = 3  # poly
    coef0: float = 0.0  # poly
    tol: float = 1e-3  # stop when the maximal KKT violation is below this
    cache_mb: float = 200.0  # kernel rows kept per binary problem
    max_iter: Optional[int] = None  # per binary problem; null = until tol

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_penalties("svm", reg, (), own="model.C")
        positive("model.C", cfg.C, "a positive penalty C")
        positive("model.tol", cfg.tol)
        positive("model.cache_mb", cfg.cache_mb)
        if cfg.max_iter is not None:
            positive("model.max_iter", cfg.max_iter, "a positive count or null")
        if str(cfg.kernel) == "poly":
            positive("model.degree", cfg.degree, "1 or more")
        if str(cfg.gamma) not in ("scale", "auto"):
            try:
                value = float(cfg.gamma)
            except ValueError:
                value = -1.0
            if not value > 0:
                raise DlxError(f"model.gamma: expected scale, auto or a positive number, got '{cfg.gamma}'")


# --------------------------------------------------------------------------- optimizer
@dataclass
class OptimizerConfig:
    name: OptimizerName = MISSING
    lr: float = 1e-3
    momentum: float = 0.0  # momentum / nesterov / rmsprop
    beta_1: float = 0.9  # adam
    beta_2: float = 0.999  # adam
    epsilon: float = 1e-7
    weight_decay: Optional[float] = None  # decoupled weight decay (AdamW-style); null = off
    clipnorm: Optional[float] = None
    clipvalue: Optional[float] = None
    schedule: Schedule = Schedule.constant
    decay_rate: float = 0.96  # exponential / step
    decay_steps: int = 1000  # exponential: optimizer steps per decay
    step_epochs: int = 10  # step: epochs per decay
    warmup_epochs: int = 0  # linear warm-up before the schedule
    # newton: stop when the gradient's max-norm is below tol; damping is added to the Hessian
    # diagonal; the step is solved by conjugate gradients on Hessian-vector products (at most max_cg)
    tol: float = 1e-5
    damping: float = 0.0
    max_cg: int = 200
    hessian_fraction: float = 1.0  # < 1: curvature from that fraction of the examples (subsampled Newton)


# --------------------------------------------------------------------------- regularization
@dataclass
class RegularizationConfig:
    """Penalties on every dense/conv kernel, and dropout after every hidden layer.

    One schema for all options, so they combine: ``regularization=l2 regularization.dropout=0.5``.
    """

    name: str = MISSING
    l1: float = 0.0
    l2: float = 0.0
    dropout: float = 0.0


# --------------------------------------------------------------------------- trainer
@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = "val_loss"
    rule: StopRule = StopRule.epochs
    patience: int = 5  # rule=epochs: epochs without improvement before stopping
    min_delta: float = 0.0  # rule=epochs
    # rule=book: validate every `eval_every_batches`; an evaluation improves when it beats the best
    # by the ratio (best/current for losses, current/best for scores; the first one always does);
    # stop once `patience_batches` batches have passed since the last improvement
    patience_batches: int = 3000
    eval_every_batches: int = 50
    improvement_ratio: float = 1.005


@dataclass
class TrainerConfig:
    epochs: int = 20
    batch_size: int = 128
    seed: int = 42
    device: Device = Device.auto
    # batches run per tf.function call; > 1 cuts Python overhead per step (see benchmarks/)
    steps_per_execution: int = 16
    # XLA-compile the train step; null = Keras' "auto"
    jit_compile: Optional[bool] = None
    shuffle: bool = True
    # best/last checkpoints are kept in memory every epoch and written at most this often (and at the end)
    checkpoint_interval_s: float = 60.0
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    progress: bool = True  # Keras' per-batch progress bar when stdout is a terminal


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


@dataclass
class EvalConfig:
    run: str = MISSING  # a training run directory
    split: str = "test"  # test | val
    batch_size: Optional[int] = None  # null = the run's trainer.batch_size (identical numbers)


@dataclass
class PredictConfig:
    run: str = MISSING  # a training run directory
    inputs: str = MISSING  # a file, a directory or a glob of image files
    top_k: int = 1


SCHEMAS: dict[str, dict[str, Any]] = {
    "dataset": {"base": DatasetConfig},
    "model": {
        "softmax": SoftmaxConfig, "mlp": MLPConfig, "cnn": CNNConfig,
        "linear_regression": LinearRegressionConfig, "logistic_regression": LogisticRegressionConfig,
        "gda": GDAConfig, "naive_bayes": NaiveBayesConfig, "svm": SVMConfig,
    },
    "optimizer": {"base": OptimizerConfig},
    "regularization": {"base": RegularizationConfig},
    "trainer": {"base": TrainerConfig},
    "logger": {"base": LoggerConfig},
}


def register() -> None:
    """Put the schemas in Hydra's ConfigStore; group YAMLs name them in their defaults list."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="predict_schema", node=PredictConfig)
    for group, nodes in SCHEMAS.items():
        for name, node in nodes.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
    # experiments/*.yaml become the `experiment` group (`dlx train experiment=NAME`)
    from omegaconf import OmegaConf

    for path in sorted(experiments_dir().glob("*.yaml")):
        cs.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")


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
