"""The classic families against scikit-learn on the same splits (scikit-learn is the reference,
never the implementation), trained through the shared loop."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import keras_npz, tiny_cfg

from dlx.commands.train import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def fit(tmp_path, *overrides):
    metrics, objects = train(tiny_cfg(*overrides), tmp_path / "run")
    return metrics, objects["model"], objects["data"]


# --------------------------------------------------------------------------- linear regression
def test_normal_equation_matches_sklearn_on_diabetes(tmp_path):
    from sklearn.linear_model import LinearRegression

    metrics, model, data = fit(tmp_path, "model=linear_regression", "dataset=diabetes")
    ref = LinearRegression().fit(data.train.x, data.train.y.ravel())
    np.testing.assert_allclose(model.kernel.numpy().ravel(), ref.coef_, rtol=1e-4)
    np.testing.assert_allclose(model.bias.numpy()[0], ref.intercept_, rtol=1e-4)
    assert metrics["epochs_run"] == 1  # one streaming pass
    assert metrics["test_r2"] == pytest.approx(ref.score(data.test.x, data.test.y.ravel()), abs=1e-4)
    assert {"test_mse", "test_r2"} <= set(metrics)


def test_book_line_recovered_by_normal_equation_and_per_sample_gd(tmp_path):
    _, exact, data = fit(tmp_path / "ne", "model=linear_regression", "dataset=synthetic_line")
    spread = data.spec.spread[0]  # inputs are z-scored: y = 300 + 20 x = a + (20 * spread) z
    assert exact.kernel.numpy()[0, 0] / spread == pytest.approx(20.0, abs=0.05)
    _, gd, _ = fit(tmp_path / "gd", "model=linear_regression", "dataset=synthetic_line", "model.solver=gd",
                   "optimizer=sgd", "optimizer.lr=0.01", "trainer.batch_size=1", "trainer.epochs=3")
    assert gd.kernel.numpy()[0, 0] == pytest.approx(exact.kernel.numpy()[0, 0], rel=0.02)
    assert gd.bias.numpy()[0] == pytest.approx(exact.bias.numpy()[0], rel=0.01)


def test_polynomial_features_fit_a_parabola():
    from dlx.models.linear_regression import LinearRegression

    x = np.linspace(-2, 2, 200, dtype=np.float32)[:, None]
    y = (1.0 + 0.5 * x - 3.0 * x**2).astype(np.float32)
    model = LinearRegression(1, degree=2)
    model.build((None, 1))
    model.compile(loss="mse")
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    pred = model.predict(x, verbose=0)
    np.testing.assert_allclose(model.kernel.numpy().ravel(), [0.5, -3.0], atol=1e-4)
    np.testing.assert_allclose(pred, y, atol=1e-3)


# --------------------------------------------------------------------------- logistic regression
def _objective(probs, y, kernel, l2):
    picked = np.clip(probs[np.arange(len(y)), y], 1e-15, 1.0)
    return -np.log(picked).mean() + l2 * float((kernel**2).sum())


@pytest.mark.parametrize("dataset, l2, hessian_fraction", [("breast_cancer", 1e-3, 1.0), ("digits", 1e-3, 1.0), ("digits", 1e-3, 0.5)])
def test_newton_reaches_sklearn_log_loss_in_few_iterations(tmp_path, dataset, l2, hessian_fraction):
    """Exact Newton (and subsampled-Hessian Newton: the gradient stays exact) reach the optimum."""
    from sklearn.linear_model import LogisticRegression

    metrics, model, data = fit(tmp_path, "model=logistic_regression", "optimizer=newton", f"dataset={dataset}",
                               "regularization=l2", f"regularization.l2={l2}", "trainer.epochs=50",
                               f"optimizer.hessian_fraction={hessian_fraction}", "trainer.early_stopping.monitor=loss")
    x, y = data.train.x.reshape(len(data.train), -1), data.train.y
    # scikit-learn minimises C * sum(log-loss) + ||W||^2 / 2, i.e. mean log-loss + ||W||^2 / (2 C n)
    ref = LogisticRegression(C=1.0 / (2 * l2 * len(y)), tol=1e-10, max_iter=10_000).fit(x, y)
    ours = _objective(model.predict(data.train.x, verbose=0), y, model.kernel.numpy(), l2)
    theirs = _objective(ref.predict_proba(x), y, ref.coef_, l2)
    assert ours == pytest.approx(theirs, abs=1e-4)
    # Newton iterations: exact curvature converges in <= 10; a subsampled Hessian takes more, cheaper steps
    assert metrics["epochs_run"] <= (10 if hessian_fraction == 1.0 else 30)


def test_newton_beats_the_same_number_of_gradient_steps(tmp_path):
    """Newton converges in <= 10 steps on breast_cancer; full-batch gradient descent with the same
    budget is still far from the optimum (it needs hundreds)."""
    common = ["model=logistic_regression", "dataset=breast_cancer", "regularization=l2", "regularization.l2=1e-3",
              "trainer.early_stopping.enabled=false"]
    newton_metrics, newton, data = fit(tmp_path / "n", *common, "optimizer=newton", "trainer.epochs=50")
    steps = newton_metrics["epochs_run"]
    _, gd, _ = fit(tmp_path / "g", *common, "optimizer=sgd", "optimizer.lr=0.5", f"trainer.epochs={steps}",
                   f"trainer.batch_size={len(data.train)}", "trainer.steps_per_execution=1")
    x, y = data.train.x, data.train.y
    optimum = _objective(newton.predict(x, verbose=0), y, newton.kernel.numpy(), 1e-3)
    after_gd = _objective(gd.predict(x, verbose=0), y, gd.kernel.numpy(), 1e-3)
    assert after_gd - optimum > 1e-2


def test_logistic_with_sgd_and_decision_boundary_plot(tmp_path):
    metrics, _, _ = fit(tmp_path, "model=logistic_regression", "dataset=blobs2d", "optimizer=sgd", "optimizer.lr=0.5",
                        "trainer.epochs=5")
    assert metrics["test_accuracy"] > 0.85
    assert (tmp_path / "run" / "plots" / "decision_boundary.png").stat().st_size > 5000


# --------------------------------------------------------------------------- GDA
@pytest.mark.parametrize("dataset, covariance", [
    ("breast_cancer", "shared"), ("cancer_synthetic", "shared"), ("cancer_synthetic", "per_class"), ("blobs2d", "per_class"),
])
def test_gda_matches_lda_and_qda(tmp_path, dataset, covariance):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis

    metrics, model, data = fit(tmp_path, "model=gda", f"dataset={dataset}", f"model.covariance={covariance}", "model.reg_covar=0")
    x, y = data.train.x, data.train.y
    if covariance == "shared":
        ref = LinearDiscriminantAnalysis(solver="lsqr", store_covariance=True).fit(x, y)
        ref_cov = ref.covariance_
    else:
        ref = QuadraticDiscriminantAnalysis(store_covariance=True).fit(x, y)
        ref_cov = np.stack(ref.covariance_)
    priors, means, cov = (t.numpy() for t in model.estimates())
    assert metrics["epochs_run"] == 1
    assert abs(metrics["test_accuracy"] - ref.score(data.test.x, data.test.y)) <= 0.005
    np.testing.assert_allclose(priors, ref.priors_, atol=1e-9)
    np.testing.assert_allclose(means, ref.means_, atol=1e-4)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-4 * np.abs(ref_cov).max())


# --------------------------------------------------------------------------- naive Bayes
@pytest.mark.parametrize("event", ["bernoulli", "multinomial"])
def test_naive_bayes_identical_predictions_on_images(tmp_path, event):
    from sklearn.naive_bayes import BernoulliNB, MultinomialNB

    _, model, data = fit(tmp_path, "model=naive_bayes", f"model.event={event}", "model.alpha=0.5", "model.binarize=4",
                         "dataset=digits", "dataset.scaling=none")
    x, y = data.train.x.reshape(len(data.train), -1), data.train.y
    ref = BernoulliNB(alpha=0.5, binarize=4) if event == "bernoulli" else MultinomialNB(alpha=0.5)
    ref.fit(x, y)
    test_x = data.test.x.reshape(len(data.test), -1)
    np.testing.assert_array_equal(model.predict(data.test.x, verbose=0).argmax(1), ref.predict(test_x))
    np.testing.assert_allclose(model.predict(data.test.x, verbose=0), ref.predict_proba(test_x), atol=1e-4)


@pytest.mark.parametrize("event", ["bernoulli", "multinomial"])
def test_naive_bayes_on_a_text_folder(tmp_path, text_folder, event):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.naive_bayes import BernoulliNB, MultinomialNB

    metrics, model, data = fit(tmp_path, "model=naive_bayes", f"model.event={event}", "dataset=text_folder",
                               f"dataset.path={text_folder}", "dataset.vocab_size=40", "dataset.test_size=20", "dataset.val_size=10")
    assert data.spec.kind == "text" and len(data.spec.feature_names) == 40
    # the same vocabulary in scikit-learn's own vectoriser gives the same count matrix
    from dlx.data.text import tokenize, vectorize

    vec = CountVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None, vocabulary=data.spec.feature_names)
    ref = (BernoulliNB(alpha=1.0, binarize=0.0) if event == "bernoulli" else MultinomialNB(alpha=1.0)).fit(data.train.x, data.train.y)
    np.testing.assert_array_equal(model.predict(data.test.x, verbose=0).argmax(1), ref.predict(data.test.x))
    assert metrics["test_accuracy"] > 0.8  # the two topics use different words
    docs = ["Goal! The match, the team's goal.", "stock market <br /> shares"]
    np.testing.assert_array_equal(vec.transform(docs).toarray(), vectorize([tokenize(d) for d in docs], data.spec.feature_names))


# --------------------------------------------------------------------------- SVM
@pytest.mark.parametrize("dataset", ["digits", "breast_cancer"])
@pytest.mark.parametrize("kernel", ["linear", "poly", "rbf"])
def test_svm_matches_svc(tmp_path, dataset, kernel):
    from sklearn.svm import SVC

    scaling = ["dataset.scaling=zscore"] if dataset == "digits" else []
    metrics, model, data = fit(tmp_path, "model=svm", f"model.kernel={kernel}", f"dataset={dataset}", *scaling)
    x = data.train.x.reshape(len(data.train), -1)
    ref = SVC(kernel=kernel, C=1.0, gamma="scale", tol=1e-3).fit(x, data.train.y)
    assert abs(metrics["test_accuracy"] - ref.score(data.test.x.reshape(len(data.test), -1), data.test.y)) <= 0.005
    assert metrics["support_vectors"] == pytest.approx(ref.n_support_.sum(), rel=0.05)
    assert sum(metrics["support_vectors_per_class"]) == metrics["support_vectors"]


def test_svm_kernel_cache_rows_give_the_same_solution():
    from dlx.models.svm import KernelRows, kernel_matrix, smo

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    y = np.where(x[:, 0] + 0.5 * rng.normal(size=120) > 0, 1.0, -1.0)

    def k(a, b):
        return kernel_matrix("rbf", a, b, 0.2, 3, 0.0)

    full = KernelRows(x, k, cache_bytes=1e9)
    tiny = KernelRows(x, k, cache_bytes=8 * 120 * 5)  # 5 rows at a time
    assert full.full is not None and tiny.full is None
    a1, rho1, _ = smo(full, y, 1.0, 1e-3, None)
    a2, rho2, _ = smo(tiny, y, 1.0, 1e-3, None)
    np.testing.assert_allclose(a1, a2, atol=1e-9)
    assert rho1 == pytest.approx(rho2)
    assert len(tiny.rows) <= tiny.capacity


def test_svm_saves_loads_and_evaluates_the_same(tmp_path):
    import keras

    from dlx import models

    metrics, model, data = fit(tmp_path, "model=svm", "dataset=breast_cancer")
    loaded = keras.saving.load_model(tmp_path / "run" / "model.keras", compile=False)
    models.compile(loaded, data.spec)
    again = loaded.evaluate(data.test.x, data.test.y, return_dict=True, verbose=0)
    assert again["accuracy"] == pytest.approx(metrics["test_accuracy"])
    np.testing.assert_allclose(loaded.predict(data.test.x, verbose=0), model.predict(data.test.x, verbose=0), atol=1e-5)


# --------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("args, message", [
    (["model=gda", "dataset=diabetes"], "model=gda is a classifier but dataset=diabetes has a real-valued target"),
    (["model=linear_regression", "dataset=digits"], "model=linear_regression is a regression model but dataset=digits has class labels"),
    (["model=svm", "model.C=0"], "model.C: 0.0 is outside the allowed range (0, 1,000,000,000,000]"),
    (["model=svm", "model.C=-1"], "model.C: -1.0 is outside the allowed range (0, 1,000,000,000,000]"),
    (["model=svm", "model.kernel=sigmoidal"], "model.kernel: Invalid value 'sigmoidal', expected one of [linear, poly, rbf]"),
    (["model=mlp", "optimizer=newton"], "optimizer=newton: Newton's method is implemented for model=logistic_regression"),
    (["model=gda", "regularization=l2"], "regularization.l2: model=gda has no l2 penalty; it regularises through model.reg_covar"),
    (["model=naive_bayes", "dataset.scaling=zscore"], "model.event=multinomial needs non-negative feature counts"),
])
def test_classic_bad_input_one_line_exit_2(dlx, workdir, args, message):
    proc = dlx("train", *args, "logger=none")
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("dlx train: error: ")
    assert message in proc.stderr
    assert not (workdir / "outputs").exists() or not any((workdir / "outputs").rglob("*.keras"))


def test_text_folder_needs_two_classes_and_no_empty_files(dlx, workdir, text_folder):
    import shutil

    bad = workdir / "one"
    shutil.copytree(text_folder / "sport", bad / "sport")
    proc = dlx("train", "model=naive_bayes", "dataset=text_folder", f"dataset.path={bad}", "logger=none")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"dlx train: error: dataset.path={bad}: found 1 class folder(s) of .txt files (sport); "
                                   "text_folder needs one folder per class, at least 2")
    (text_folder / "sport" / "empty.txt").write_text("  \n")
    proc = dlx("train", "model=naive_bayes", "dataset=text_folder", f"dataset.path={text_folder}", "logger=none")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"dlx train: error: {text_folder / 'sport' / 'empty.txt'}: empty document (no words); remove it or add text"


def test_train_eval_predict_tabular_and_text(dlx, workdir, text_folder):
    import json

    dlx("train", "model=svm", "dataset=breast_cancer", "logger=none", "hydra.run.dir=svm", check=True)
    metrics = json.loads((workdir / "svm" / "metrics.json").read_text())
    proc = dlx("eval", "run=svm", check=True)
    assert f"{metrics['test_accuracy']:.4f}" in proc.stdout
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    rows = workdir / "rows.csv"
    rows.write_text(",".join(bunch.feature_names) + "\n" + "\n".join(",".join(map(str, r)) for r in bunch.data[:3]) + "\n")
    proc = dlx("predict", "run=svm", f"inputs={rows}", check=True)
    predicted = [line.split()[1] for line in proc.stdout.strip().splitlines()]
    assert predicted == [bunch.target_names[t] for t in bunch.target[:3]]

    dlx("train", "model=naive_bayes", "dataset=text_folder", f"dataset.path={text_folder}", "dataset.test_size=20",
        "dataset.val_size=10", "logger=none", "hydra.run.dir=nb", check=True)
    doc = workdir / "doc.txt"
    doc.write_text("The striker scored a late goal and the team won the cup.")
    proc = dlx("predict", "run=nb", f"inputs={doc}", "top_k=2", check=True)
    assert proc.stdout.split()[1] == "sport"

    dlx("train", "model=linear_regression", "dataset=synthetic_line", "logger=none", "hydra.run.dir=line", check=True)
    rows.write_text("x\n10\n")
    proc = dlx("predict", "run=line", f"inputs={rows}", check=True)
    assert float(proc.stdout.split()[1]) == pytest.approx(500.0, abs=2.0)
    assert (workdir / "line" / "plots" / "fit.png").is_file()


# --------------------------------------------------------------------------- Keras npz corpora
def test_imdb_and_reuters_npz_as_keras_shuffles_them(tmp_path):
    from types import SimpleNamespace

    from dlx.data import datasets

    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 60, size=rng.integers(3, 20)).tolist() for _ in range(50)]
    labels = rng.integers(0, 2, size=50)
    keras_npz(tmp_path / "imdb.npz", x_train=seqs[:30], y_train=labels[:30], x_test=seqs[30:], y_test=labels[30:])
    (tmp_path / "imdb_word_index.json").write_text('{"the": 1, "movie": 2, "good": 3}')
    cfg = SimpleNamespace(name="imdb", path=str(tmp_path), scaling="none", val_size=5, test_size=0, subset=None, vocab_size=10)
    data = datasets.load(cfg)
    # keras.datasets.imdb: RandomState(113) shuffles train, then (same generator) test
    order = np.arange(30)
    rs = np.random.RandomState(113)
    rs.shuffle(order)
    first = seqs[order[0]]
    expected = np.bincount([w - 1 for w in first if w <= 10], minlength=10)
    np.testing.assert_array_equal(data.train.x[0], expected)
    assert data.spec.feature_names[:3] == ["the", "movie", "good"] and data.spec.feature_names[3] == "<rank 4>"
    assert len(data.train) + len(data.val) == 30 and len(data.test) == 20

    keras_npz(tmp_path / "reuters.npz", x=seqs, y=rng.integers(0, 46, size=50))
    data = datasets.load(SimpleNamespace(**{**vars(cfg), "name": "reuters"}))
    assert len(data.train) + len(data.val) == 40 and len(data.test) == 10  # keras' 80/20
    assert data.spec.num_classes == int(np.load(tmp_path / "reuters.npz", allow_pickle=True)["y"].max()) + 1


def test_npz_loader_refuses_pickled_code(tmp_path):
    from dlx.data.text import load_npz
    from dlx.errors import DataError

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    arr = np.empty(1, dtype=object)
    arr[0] = Evil()
    np.savez(tmp_path / "evil.npz", x=arr)
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_npz(tmp_path / "evil.npz")
    with pytest.raises(ValueError, match="allow_pickle=False"):  # it really is a pickle stream that np.load would run
        np.load(tmp_path / "evil.npz", allow_pickle=False)["x"]


@pytest.mark.parametrize("family", ["gda", "svm"])
def test_classic_runs_are_tracked_like_any_other(tmp_path, monkeypatch, family):
    """The statistics pass and the SMO solver go through the same callbacks: TensorBoard scalars,
    an MLflow run with the family's own numbers, checkpoints."""
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    metrics, _ = train(tiny_cfg(f"model={family}", "dataset=breast_cancer", logger="both"), tmp_path / "run")
    val = EventAccumulator(str(tmp_path / "run" / "tb" / "validation"), size_guidance={"tensors": 0}).Reload()
    assert {"epoch_loss", "epoch_accuracy"} <= set(val.Tags()["tensors"])
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("dlx").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    if family == "svm":
        assert run.data.metrics["support_vectors"] == metrics["support_vectors"] > 0
    assert (tmp_path / "run" / "checkpoints" / "best.keras").is_file()


def test_text_folder_with_official_train_test_split_and_chosen_classes(tmp_path):
    """The aclImdb layout: DIR/train/<class>, DIR/test/<class>; dataset.classes skips train/unsup."""
    from types import SimpleNamespace

    from conftest import write_text_folder

    from dlx.data import datasets
    from dlx.errors import DataError

    root = tmp_path / "acl"
    write_text_folder(root / "train", n_per_class=30)
    write_text_folder(root / "test", n_per_class=10, seed=1)
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0.txt").write_text("no label here")
    cfg = SimpleNamespace(name="text_folder", path=str(root), scaling="none", val_size=10, test_size=0, subset=None,
                          vocab_size=25, classes=["finance", "sport"])
    data = datasets.load(cfg)
    assert data.spec.class_names == ["finance", "sport"]
    assert (len(data.train) + len(data.val), len(data.test)) == (60, 20)
    assert data.train.x.shape[1] == 25 and set(np.unique(data.val.y)) == {0, 1}  # shuffled before the val tail
    with pytest.raises(DataError, match="no folder of .txt files named unsup"):
        datasets.load(SimpleNamespace(**{**vars(cfg), "classes": ["finance", "unsup"], "path": str(root / "test")}))
