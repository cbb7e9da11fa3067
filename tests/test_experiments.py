"""experiments/ presets and the book's early-stopping rule."""

import shutil

import pytest
from conftest import FASHION_DIR, SHARED_DATA, compose
from dlx.config import plain
from dlx.schemas import experiments_dir
from dlx.training.callbacks import BookEarlyStopping

PRESETS = sorted(p.stem for p in experiments_dir().glob("*.yaml"))


def test_there_are_book_presets_with_tuned_variants():
    books = [p for p in PRESETS if p.startswith("book_")]
    assert {"book_softmax_mnist", "book_mlp_sigmoid_mnist", "book_mlp_relu_mnist", "book_cnn_mnist"} <= set(books)
    assert {"book_gda_cancer", "book_svm_digits", "book_linear_regression_line", "book_logistic_regression_cancer",
            "book_naive_bayes_digits"} <= set(books)
    assert {"book_rbm_mnist", "book_dae_mnist", "book_dae_sigmoid_mnist", "book_sdae_mnist", "book_dbn_mnist"} <= set(books)
    assert {"book_lstm_mnist", "book_char_rnn", "book_lstm_imdb", "book_captioning_coco"} <= set(books)
    for name in books:
        tags = plain(compose([f"experiment={name}"]))["tags"]
        if "book_pseudo_likelihood" in tags:  # the RBM reports a pseudo-likelihood, not an accuracy
            assert tags["book_pseudo_likelihood"] < 0
        else:
            assert tags["book_test_accuracy"] is None or 0 < tags["book_test_accuracy"] < 1
        assert tags["tuned_variant"] in PRESETS


def test_every_model_family_has_a_book_preset():
    from dlx.schemas import conf_dir

    # model=ae, dae and sparse_ae are presets of one family (model.name=autoencoder)
    families = {plain(compose([f"model={p.stem}"]))["model"]["name"] for p in (conf_dir() / "model").glob("*.yaml")}
    covered = {plain(compose([f"experiment={name}"]))["model"]["name"] for name in PRESETS if name.startswith("book_")}
    assert families <= covered, f"families without a book preset (a row in RESULTS.md): {sorted(families - covered)}"


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_composes(name):
    cfg = plain(compose([f"experiment={name}"]))
    if name.endswith("_mnist"):
        assert cfg["dataset"]["name"] == "mnist"
        # the dataset can be swapped on the command line (the report runs them on Fashion-MNIST offline)
        assert plain(compose([f"experiment={name}", "dataset=fashion_mnist"]))["dataset"]["name"] == "fashion_mnist"
    # every preset names a built-in family and dataset (found, not listed here)
    from dlx.data.datasets import LOADERS
    from dlx.family import builtin

    assert cfg["dataset"]["name"] in LOADERS
    assert cfg["model"]["name"] in builtin()
    assert cfg["model"]["_target_"] == f"dlx.families.{cfg['model']['name']}.build"


def test_book_softmax_preset_is_the_books_setting():
    cfg = plain(compose(["experiment=book_softmax_mnist"]))
    assert cfg["model"] == {"name": "softmax", "_target_": "dlx.families.softmax.build", "zero_init": True}
    assert (cfg["optimizer"]["name"], cfg["optimizer"]["lr"], cfg["trainer"]["batch_size"]) == ("sgd", 0.5, 100)
    es = cfg["trainer"]["early_stopping"]
    assert (es["rule"], es["patience_batches"], es["eval_every_batches"], es["improvement_ratio"]) == ("book", 3000, 50, 1.005)


class FakeModel:
    stop_training = False


def run_rule(curve, patience, every=1, steps_per_call=1, mode="min", ratio=1.005):
    """Feed a scripted validation curve to the rule; return (stop step, evaluation steps)."""
    values = iter(curve)
    rule = BookEarlyStopping(lambda: next(values), mode, patience, every, ratio)
    rule.set_model(FakeModel())
    rule.on_epoch_begin(0)
    batch = -1
    while not rule.model.stop_training:
        batch += steps_per_call
        rule.on_train_batch_end(batch)
    return rule.stopped_step, [s for s, _ in rule.evaluations], rule


def test_stops_exactly_patience_batches_after_the_last_improvement():
    # improvements at evaluations 1, 2 (ratio 1.11), then only sub-0.5 % gains: best stays at step 2
    curve = [1.0, 0.9, 0.899, 0.8981, 0.95, 0.9, 0.9, 0.9, 0.9, 0.9]
    stop, evals, rule = run_rule(curve, patience=5)
    assert rule.best_step == 2 and rule.best == 0.9
    assert stop == 2 + 5


def test_first_evaluation_always_counts():
    # a single, never-beaten evaluation: still the best (the book's code compares it with 0 and misses it)
    stop, _, rule = run_rule([0.5] + [0.6] * 10, patience=3)
    assert rule.best == 0.5 and rule.best_step == 1 and stop == 4


def test_evaluates_every_n_batches_with_steps_per_execution():
    # validation every 50 batches; Keras reports every 10 (steps_per_execution=10); patience 3000
    stop, evals, _ = run_rule([1.0] + [1.0] * 200, patience=3000, every=50, steps_per_call=10)
    assert evals[:3] == [50, 100, 150]
    assert stop == 50 + 3000


def test_scores_improve_upwards():
    stop, _, rule = run_rule([0.90, 0.91, 0.912, 0.5, 0.5, 0.5], patience=3, mode="max")
    assert rule.best == 0.91 and stop == 5


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_report_quick_trains_every_preset(dlx, workdir):
    corpus = SHARED_DATA / "tinyshakespeare" / "input.txt"
    if corpus.is_file():  # what `dlx data download tinyshakespeare` would have cached
        (workdir / "cache" / "tinyshakespeare").mkdir(parents=True)
        shutil.copy(corpus, workdir / "cache" / "tinyshakespeare" / "input.txt")
    proc = dlx("report", "experiments", "--quick", "--dataset", "fashion_mnist", "--out", str(workdir / "rep"),
               timeout=1200, check=True)
    table = (workdir / "rep" / "RESULTS.md").read_text()
    books = [name for name in PRESETS if name.startswith("book_")]
    tuned = {plain(compose([f"experiment={name}"]))["tags"]["tuned_variant"] for name in books}
    for name in books + sorted(tuned):  # the report's rows: each book preset and its tuned variant
        assert f"experiment={name}" in table, proc.stdout
    assert (workdir / "rep" / "results.png").is_file()
    rows = {line.split("`")[1]: line for line in table.splitlines() if line.startswith("| `book_")}
    # no IMDB download and no COCO features here: those rows say why instead of a number
    assert "not run: could not download imdb.npz" in rows["book_lstm_imdb"]
    assert "not run: dataset.path: coco_captions needs" in rows["book_captioning_coco"]
    if corpus.is_file():
        assert "(bits/char)" in rows["book_char_rnn"] and "not run" not in rows["book_char_rnn"]


def test_report_rows_read_back_for_only_reruns(tmp_path):
    """`--only` keeps the other rows of the last RESULTS.md: a table line reads back as it was written."""
    from dlx.commands.report import previous_rows, table_line

    row = {"preset": "book_char_rnn", "tuned_name": "dlx_char_rnn", "book": None, "book_note": "", "data": "tinyshakespeare",
           "metric": "bits/char", "dlx": 2.3456, "tuned": 1.9876}
    book = {"epochs_run": 5, "wall_seconds": 61.2, "command": "dlx train experiment=book_char_rnn"}
    tuned = {"error": "could not download input.txt", "epochs_run": 0, "wall_seconds": 1.0, "command": "dlx train experiment=dlx_char_rnn"}
    line = table_line(row, book, tuned)
    (tmp_path / "RESULTS.md").write_text(f"# x\n\n{line}\n\n- `{book['command']}`\n- `{tuned['command']}`\n- `dlx train experiment=other`\n")
    back = previous_rows(tmp_path / "RESULTS.md")["book_char_rnn"]
    assert "not run: could not download input.txt" in line and back["line"] == line
    assert (back["metric"], back["book"], back["dlx"]) == ("bits/char", None, 2.3456)
    assert back["tuned"] != back["tuned"]  # not run: NaN, kept off the chart
    assert back["commands"] == [book["command"], tuned["command"]]
