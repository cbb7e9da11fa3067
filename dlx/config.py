"""The typed config schema.

Every YAML file under ``conf/`` is merged onto one of these dataclasses (its ``defaults`` list
names the schema), so Hydra rejects unknown keys and values of the wrong type while it composes
the config, before any TensorFlow is imported. Keep this module free of heavy imports: the CLI
loads it on every call.
"""

from __future__ import annotations

import math
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


class Strategy(Enum):
    default = "default"  # one device
    mirrored = "mirrored"  # tf.distribute.MirroredStrategy: one replica per visible GPU, in one job


class Precision(Enum):
    float32 = "float32"
    mixed_float16 = "mixed_float16"  # float16 compute, float32 variables (GPU only; CPU falls back to float32)


class Direction(Enum):
    minimize = "minimize"
    maximize = "maximize"


class Sampler(Enum):
    tpe = "tpe"
    random = "random"


class Pruner(Enum):
    none = "none"
    median = "median"  # stop a trial whose value at epoch k is worse than the median of earlier trials at k
    halving = "halving"  # successive halving (asynchronous)


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


class Noise(Enum):
    none = "none"
    mask = "mask"  # masking noise: each input set to 0 with probability `level`
    gaussian = "gaussian"  # additive N(0, level^2)


class BiasInit(Enum):
    data = "data"
    zero = "zero"


class Cell(Enum):
    rnn = "rnn"  # Elman RNN (tanh)
    lstm = "lstm"
    gru = "gru"


class Side(Enum):
    pre = "pre"
    post = "post"


class ReconstructionLoss(Enum):
    bce = "bce"  # binary cross-entropy: inputs in [0, 1], sigmoid outputs
    mse = "mse"


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
    # labelled images collected by `dlx serve` (POST /v1/samples), added to the training split:
    # "samples" = those of the default serve.state_dir (outputs/serve), or a state directory
    extra: Optional[str] = None
    # generated datasets (synthetic_line, blobs2d, cancer_synthetic): size, noise and their own seed
    n_samples: Optional[int] = None  # null = the dataset's book size
    noise: float = 10.0
    data_seed: int = 0
    # text datasets: the N most frequent training words are the features (word counts)
    vocab_size: int = 3000
    # text_folder: the class folders to use (aclImdb: [neg, pos]); null = every folder with .txt files
    classes: Optional[List[str]] = None
    # text as word ids (model=lstm_sentiment): sequences padded/truncated to max_length words,
    # pad id 0, out-of-vocabulary id 1; pre = at the start, as keras.utils.pad_sequences
    max_length: int = 200
    padding: Side = Side.pre
    truncating: Side = Side.pre
    # character corpora (tinyshakespeare, any UTF-8 file): training windows of seq_length characters
    seq_length: int = 100


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
    # "classification" or "regression": the dataset's target must match; "unsupervised": any
    # dataset, its labels unused
    task: ClassVar[str] = "classification"
    newton: ClassVar[bool] = False  # optimizer=newton applies
    # the kinds of data it reads (DataSpec.kind): image, tabular, text (word counts), words (word
    # ids; text datasets are loaded that way for it), chars (a character corpus), captions
    kinds: ClassVar[tuple] = ("image", "tabular", "text")
    generates: ClassVar[bool] = False  # `dlx sample` draws from its runs
    # batches per tf.function call when trainer.steps_per_execution is null: 16 cuts the per-step
    # overhead of small feed-forward models ~2x (RecurrentFamily: 1)
    steps_per_execution: ClassVar[int] = 16

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        """Family-specific checks of the composed config (plain values)."""


KIND_NAMES = {"image": "images", "tabular": "tabular data", "text": "text", "words": "text", "chars": "a character corpus",
              "captions": "a captioning dataset"}

# what to use instead: by the data's kind where it dictates the model, else by what the model reads
DATA_HINTS = {"chars": " (use model=char_rnn)", "captions": " (use model=captioning)"}
MODEL_HINTS = {"image": " (try model=mlp)", "words": " (text datasets: imdb, reuters, text_folder)",
               "chars": " (dataset=tinyshakespeare, or any UTF-8 file as dataset.path)",
               "captions": " (dataset=coco_captions dataset.path=DIR)"}


def family_schema(model_name: str) -> Any:
    """The schema class of `model=<model_name>` (its ClassVars say what the family needs)."""
    return SCHEMAS["model"].get(model_name, Family)


def steps_per_execution(trainer, model_name: str) -> int:
    """trainer.steps_per_execution, or the family's choice when it is null."""
    chosen = trainer["steps_per_execution"] if isinstance(trainer, dict) else trainer.steps_per_execution
    if chosen is None:
        return family_schema(model_name).steps_per_execution
    positive("trainer.steps_per_execution", chosen, "a positive number of batches or null")
    return chosen


def reads_words(model_name: str) -> bool:
    """Does this family read text datasets as word-id sequences (rather than word counts)?"""
    return "words" in family_schema(model_name).kinds


def check_model(cfg, reg, optimizer, data) -> None:
    """Can `model=cfg.name` train on this data with this penalty and optimizer? Raises DlxError."""
    family = family_schema(cfg.name)
    spec = data.spec
    if family.task != "unsupervised" and spec.task != family.task:
        kind = "a classifier" if family.task == "classification" else "a regression model"
        target = "class labels" if spec.task == "classification" else "a real-valued target"
        raise DlxError(f"model={cfg.name} is {kind} but dataset={spec.name} has {target}")
    if spec.kind not in family.kinds:
        raise DlxError(f"model={cfg.name} needs {' or '.join(KIND_NAMES[k] for k in family.kinds)}, but dataset={spec.name} "
                       f"is {KIND_NAMES[spec.kind]}{DATA_HINTS.get(spec.kind) or MODEL_HINTS.get(family.kinds[0], '')}")
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

    kinds: ClassVar[tuple] = ("image",)

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


def check_unit_interval(family: str, data, why: str) -> None:
    lo, hi = float(data.train.x.min()), float(data.train.x.max())
    if lo < 0 or hi > 1:
        raise DlxError(f"model={family} needs inputs in [0, 1] ({why}), but dataset={data.spec.name} "
                       f"(scaling={data.spec.scaling}) ranges over [{lo:.3g}, {hi:.3g}]; use dataset.scaling=unit")


@dataclass
class AutoencoderConfig(Family):
    """Encoder `hidden` sizes, the decoder mirrors them; `ae`, `dae` and `sparse_ae` are presets of it."""

    task: ClassVar[str] = "unsupervised"
    generates: ClassVar[bool] = True

    name: str = "autoencoder"
    hidden: List[int] = field(default_factory=lambda: [256])
    activation: str = "sigmoid"
    tied: bool = False  # decoder kernels are the encoder's, transposed
    noise: Noise = Noise.none  # input corruption while training (denoising)
    noise_level: float = 0.0  # mask: fraction of inputs zeroed; gaussian: standard deviation
    # sparse: beta * sum_j KL(rho || mean activation of hidden unit j) on every sigmoid hidden layer
    sparsity_target: float = 0.05
    sparsity_weight: float = 0.0  # beta; 0 = off
    loss: ReconstructionLoss = ReconstructionLoss.bce

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_penalties("autoencoder", reg, ("l1", "l2"))
        if not cfg.hidden or min(cfg.hidden) < 1:
            raise DlxError(f"model.hidden: expected one or more positive layer sizes, got {cfg.hidden}")
        noise = str(cfg.noise)
        if noise == "mask" and not 0 < cfg.noise_level < 1:
            raise DlxError(f"model.noise_level: masking noise needs a fraction in (0, 1), got {cfg.noise_level}")
        if noise == "gaussian":
            positive("model.noise_level", cfg.noise_level, "a positive standard deviation")
        if cfg.sparsity_weight:
            if cfg.activation != "sigmoid":
                raise DlxError(f"model.sparsity_weight: the KL sparsity penalty needs activation=sigmoid "
                               f"(mean activations in (0, 1)), got activation={cfg.activation}")
            if not 0 < cfg.sparsity_target < 1:
                raise DlxError(f"model.sparsity_target: expected a fraction in (0, 1), got {cfg.sparsity_target}")
        if str(cfg.loss) == "bce":
            check_unit_interval("autoencoder", data, "loss=bce compares with pixel intensities")


@dataclass
class RBMConfig(Family):
    """Bernoulli-Bernoulli restricted Boltzmann machine, CD-k or persistent CD (PCD-k)."""

    task: ClassVar[str] = "unsupervised"
    generates: ClassVar[bool] = True

    name: str = "rbm"
    hidden: int = 500
    k: int = 1  # Gibbs steps per update
    persistent: bool = True  # PCD: negative chains carry over between batches (trainer.batch_size chains)
    # data: visible biases start at log(p/(1-p)) of the training pixel means (Hinton's guide);
    # zero: as the book's tutorial and scikit-learn
    visible_bias_init: BiasInit = BiasInit.data

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_penalties("rbm", reg, ("l2",))
        positive("model.hidden", cfg.hidden, "a positive number of hidden units")
        positive("model.k", cfg.k, "1 or more Gibbs steps")
        check_unit_interval("rbm", data, "its visible units are Bernoulli probabilities")


@dataclass
class PretrainConfig:
    """Greedy layer-wise pretraining of the hidden stack (dbn: RBMs, sdae: denoising autoencoders)."""

    enabled: bool = True  # false: the same network from random initialisation
    epochs: int = 15  # per layer
    lr: float = 0.01  # plain SGD, as in the book
    batch_size: Optional[int] = None  # null = trainer.batch_size
    k: int = 1  # dbn: CD-k
    corruption: List[float] = field(default_factory=lambda: [0.1, 0.2, 0.3])  # sdae: masking noise per layer
    # a run directory whose pretrained.npz to start from instead of pretraining again
    from_run: Optional[str] = None


def check_stack(family: str, cfg, reg, data) -> None:
    check_penalties(family, reg, ("l1", "l2", "dropout"))
    if not cfg.hidden or min(cfg.hidden) < 1:
        raise DlxError(f"model.hidden: expected one or more positive layer sizes, got {cfg.hidden}")
    pre = cfg.pretrain
    if pre.enabled and pre.from_run:
        check_pretrained_run(pre.from_run, [math.prod(data.spec.input_shape), *cfg.hidden])
    elif pre.enabled:
        positive("model.pretrain.epochs", pre.epochs, "1 or more")
        positive("model.pretrain.lr", pre.lr)
        check_unit_interval(family, data, "the first pretrained layer models pixel intensities")


PRETRAINED_FILE = "pretrained.npz"  # what a dbn/sdae run keeps of its pretraining


def load_stack(path: Path) -> list:
    """[(kernel, visible bias, hidden bias)] per pretrained layer, bottom first (numpy only)."""
    import numpy as np

    with np.load(path, allow_pickle=False) as f:
        n = len([k for k in f.files if k.endswith("_kernel")])
        return [(f[f"layer{i}_kernel"], f[f"layer{i}_visible_bias"], f[f"layer{i}_hidden_bias"]) for i in range(1, n + 1)]


def check_pretrained_run(run: str, sizes: list[int]) -> None:
    """`model.pretrain.from_run` must hold pretrained layers of exactly these sizes (input first)."""
    path = Path(run).expanduser() / PRETRAINED_FILE
    if not path.is_file():
        raise DlxError(f"model.pretrain.from_run={run}: no {PRETRAINED_FILE} there (a dbn/sdae run with pretraining)")
    kernels = [w.shape for w, _, _ in load_stack(path)]
    theirs = [kernels[0][0], *(shape[1] for shape in kernels)] if kernels else []
    if theirs != sizes:
        raise DlxError(f"model.pretrain.from_run={run}: its pretrained layers are {'-'.join(map(str, theirs))}, "
                       f"but this network is {'-'.join(map(str, sizes))} (input-model.hidden); they must match")


@dataclass
class DBNConfig(Family):
    """Deep belief net: RBMs pretrained greedily, then the sigmoid stack + softmax fine-tuned."""

    generates: ClassVar[bool] = True  # Gibbs sampling in the pretrained stack

    name: str = "dbn"
    hidden: List[int] = field(default_factory=lambda: [1000, 1000, 1000])
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_stack("dbn", cfg, reg, data)
        positive("model.pretrain.k", cfg.pretrain.k, "1 or more Gibbs steps")


@dataclass
class SDAEConfig(Family):
    """Stacked denoising autoencoders pretrained greedily, then the sigmoid stack + softmax fine-tuned."""

    name: str = "sdae"
    hidden: List[int] = field(default_factory=lambda: [1000, 1000, 1000])
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(lr=0.001))

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_stack("sdae", cfg, reg, data)
        levels = cfg.pretrain.corruption
        if len(levels) not in (1, len(cfg.hidden)):
            raise DlxError(f"model.pretrain.corruption: {len(levels)} levels for {len(cfg.hidden)} hidden layers "
                           f"(model.hidden={list(cfg.hidden)}); give one level, or one per layer")
        if any(not 0 <= c < 1 for c in levels):
            raise DlxError(f"model.pretrain.corruption: expected fractions in [0, 1), got {list(levels)}")


class RecurrentFamily(Family):
    # a recurrent step is a loop already: inside Keras' 16-step loop the char-RNN's measured ~5 %
    # slower, lstm_rows' the same either way
    steps_per_execution: ClassVar[int] = 1


def check_recurrent(family: str, cfg, reg) -> None:
    check_penalties(family, reg, ("l1", "l2", "dropout"))
    positive("model.hidden", cfg.hidden, "a positive number of units")
    if not 0 <= reg.dropout < 1:
        raise DlxError(f"regularization.dropout: expected a fraction in [0, 1), got {reg.dropout}")


@dataclass
class CharRNNConfig(RecurrentFamily):
    """Character-level language model: embedding -> `layers` recurrent layers -> next-character logits."""

    kinds: ClassVar[tuple] = ("chars",)
    generates: ClassVar[bool] = True

    name: str = "char_rnn"
    cell: Cell = Cell.lstm
    layers: int = 2
    hidden: int = 256
    embedding: int = 64
    # a text sample in train.log and TensorBoard every N epochs (0 = never)
    sample_every: int = 5
    sample_length: int = 200

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_recurrent("char_rnn", cfg, reg)
        positive("model.layers", cfg.layers, "1 or more")
        positive("model.embedding", cfg.embedding, "a positive embedding size")
        if cfg.sample_every < 0 or cfg.sample_length < 1:
            raise DlxError(f"model.sample_every / sample_length: expected >= 0 / >= 1, got {cfg.sample_every} / {cfg.sample_length}")


@dataclass
class LSTMRowsConfig(RecurrentFamily):
    """An image read as a sequence of its rows (28 steps of 28 pixels for MNIST) by one recurrent layer."""

    kinds: ClassVar[tuple] = ("image",)

    name: str = "lstm_rows"
    cell: Cell = Cell.lstm
    hidden: int = 128

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_recurrent("lstm_rows", cfg, reg)


@dataclass
class TextClassifierConfig(RecurrentFamily):
    """Word ids -> embedding -> (bidirectional) LSTM/GRU -> softmax; `lstm_sentiment` is its preset."""

    kinds: ClassVar[tuple] = ("words",)

    name: str = "text_classifier"
    cell: Cell = Cell.lstm
    hidden: int = 64
    embedding: int = 64
    bidirectional: bool = True

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_recurrent("text_classifier", cfg, reg)
        positive("model.embedding", cfg.embedding, "a positive embedding size")


@dataclass
class CaptioningConfig(RecurrentFamily):
    """Image features -> initial hidden state; words -> embedding -> RNN/LSTM -> next-word logits."""

    kinds: ClassVar[tuple] = ("captions",)
    generates: ClassVar[bool] = True

    name: str = "captioning"
    cell: Cell = Cell.lstm
    hidden: int = 512
    embedding: int = 256  # word vector size
    beam_width: int = 1  # decoding for BLEU and `dlx sample`; 1 = greedy
    bleu_images: int = 1000  # validation images captioned for BLEU-4 after training (0 = skip)

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_penalties("captioning", reg, ("l1", "l2"))
        positive("model.hidden", cfg.hidden, "a positive number of units")
        positive("model.embedding", cfg.embedding, "a positive word-vector size")
        positive("model.beam_width", cfg.beam_width, "1 or more")
        if cfg.bleu_images < 0:
            raise DlxError(f"model.bleu_images: expected a count >= 0, got {cfg.bleu_images}")


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
    # batches run per tf.function call; > 1 cuts Python overhead per step (see benchmarks/);
    # null = the family's `steps_per_execution` (16, recurrent families 1)
    steps_per_execution: Optional[int] = None
    # XLA-compile the train step; null = Keras' "auto"
    jit_compile: Optional[bool] = None
    shuffle: bool = True
    # best/last checkpoints are kept in memory every epoch and written at most this often (and at the end)
    checkpoint_interval_s: float = 60.0
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    # GPU indices this run may use (null = every visible GPU; in a parallel sweep, one GPU per job)
    devices: Optional[List[int]] = None
    # bit-identical results for the same seed on CPU (tf.config.experimental.enable_op_determinism; slower)
    deterministic: bool = False
    strategy: Strategy = Strategy.default
    precision: Precision = Precision.float32
    progress: bool = True  # Keras' per-batch progress bar when stdout is a terminal
    # TensorFlow's CPU threads (within and across ops); null = TensorFlow's choice (every core), or
    # for each job of a parallel local sweep (joblib), the cores divided among the jobs running at once
    threads: Optional[int] = None


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
    n_trials: int = 20
    n_jobs: int = 1  # trials launched together (run in parallel by a parallel launcher)
    sampler: Sampler = Sampler.tpe
    seed: int = 0
    pruner: Pruner = Pruner.none
    startup_trials: int = 2  # pruner=median: trials that are never pruned, to build the median
    warmup_epochs: int = 1  # pruner=median: epochs of every trial that are never pruned
    # null = sqlite:///<sweep dir>/optuna.db; an RDB URL (postgresql://...) for jobs on many hosts
    storage: Optional[str] = None
    resume: bool = False  # continue the study in hydra.sweep.dir (finished trials kept)
    # search space: config key -> {type: float|int|categorical, low, high, log, step, choices}
    params: Dict[str, Any] = field(default_factory=dict)
    enqueue: List[Any] = field(default_factory=list)  # parameter sets tried first, in order
    trial: Optional[int] = None  # set by the sweeper for each job: the Optuna trial number


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
    # DIR: continue that killed run in its own directory; true (multirun): skip finished jobs and
    # continue killed ones of the sweep in hydra.sweep.dir
    resume: Optional[str] = None
    # an Optuna search (`dlx train -m sweep=NAME`, conf/sweep/NAME.yaml); null otherwise
    sweep: Optional[SweepConfig] = None


@dataclass
class EvalConfig:
    run: str = MISSING  # a training run directory
    split: str = "test"  # test | val
    batch_size: Optional[int] = None  # null = the run's trainer.batch_size (identical numbers)


@dataclass
class SampleConfig:
    run: str = MISSING  # a training run directory of a family that generates (dlx sample --help)
    seed: int = 0  # the same seed draws the same samples
    out: Optional[str] = None  # directory for the PNGs; null = <run>/samples
    # rbm / dbn: Gibbs chains, one column each; a frame (row) every `steps_between` Gibbs steps
    n_chains: int = 20
    n_frames: int = 10
    steps_between: int = 1000
    start: str = "test"  # test: chains start at test images; noise: at uniform random pixels
    # autoencoders: this many original / corrupted / reconstructed triplets, and up to `n_filters` filters
    n: int = 10  # captioning: images captioned
    n_filters: int = 100
    # char_rnn: `length` characters after `prime` (null = a newline, or the vocabulary's first
    # character); temperature 0 = greedy; top_k > 0 samples among the k likeliest only
    prime: Optional[str] = None
    length: int = 500
    temperature: float = 1.0
    top_k: int = 0
    # captioning: images from this split; beam width (null = the run's model.beam_width)
    split: str = "val"
    beam_width: Optional[int] = None


@dataclass
class PredictConfig:
    run: str = MISSING  # a training run directory
    inputs: str = MISSING  # a file, a directory or a glob of image files
    top_k: int = 1


class Auth(Enum):
    hmac = "hmac"  # every /v1/ request signed with a key from `dlx users add`
    none = "none"  # no signing: a local demo, only on 127.0.0.1


class Worker(Enum):
    thread = "thread"
    none = "none"


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    auth: Auth = Auth.hmac
    # users.db + server.key (keys), samples/ + samples.db (collected labelled images)
    state_dir: str = "outputs/serve"
    max_upload_bytes: int = 2_000_000  # larger requests get 413
    max_batch: int = 64  # inputs per request
    timeout_s: float = 10.0  # per prediction; slower gets 504
    # who runs /v1/jobs: a worker thread in the server, or none (`dlx worker` processes instead)
    worker: Worker = Worker.thread
    # model=models:/NAME@ALIAS: how often to look for a newly promoted version (POST /v1/reload: now)
    poll_s: float = 30.0
    tracking_uri: Optional[str] = None  # of the model registry; null = as dlx train


@dataclass
class ServeConfig:
    run: Optional[str] = None  # a training run directory (an image or tabular classifier)
    # or a registered model: models:/NAME@champion (followed: a newly promoted champion is loaded)
    model: Optional[str] = None
    serve: ServeSettings = field(default_factory=ServeSettings)


@dataclass
class PromoteConfig:
    run: str = MISSING  # the candidate: a finished training run directory
    name: str = "dlx"  # the registered model's name in MLflow's model registry
    alias: str = "champion"
    tracking_uri: Optional[str] = None  # null = $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db


SCHEMAS: dict[str, dict[str, Any]] = {
    "dataset": {"base": DatasetConfig},
    "model": {
        "softmax": SoftmaxConfig, "mlp": MLPConfig, "cnn": CNNConfig,
        "linear_regression": LinearRegressionConfig, "logistic_regression": LogisticRegressionConfig,
        "gda": GDAConfig, "naive_bayes": NaiveBayesConfig, "svm": SVMConfig,
        "autoencoder": AutoencoderConfig, "rbm": RBMConfig, "dbn": DBNConfig, "sdae": SDAEConfig,
        "char_rnn": CharRNNConfig, "lstm_rows": LSTMRowsConfig, "text_classifier": TextClassifierConfig,
        "captioning": CaptioningConfig,
    },
    "optimizer": {"base": OptimizerConfig},
    "regularization": {"base": RegularizationConfig},
    "trainer": {"base": TrainerConfig},
    "logger": {"base": LoggerConfig},
}


def higher_is_better(metric: str) -> bool:
    """True for scores (accuracy, AUC, R², BLEU, ...), False for losses and errors."""
    return any(s in metric for s in ("acc", "auc", "precision", "recall", "r2", "bleu"))


def register() -> None:
    """Put the schemas in Hydra's ConfigStore; group YAMLs name them in their defaults list."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="predict_schema", node=PredictConfig)
    cs.store(name="sample_schema", node=SampleConfig)
    cs.store(name="serve_schema", node=ServeConfig)
    cs.store(name="promote_schema", node=PromoteConfig)
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
