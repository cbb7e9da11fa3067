"""`dataset=csv dataset.path=FILE dataset.target=COLUMN`: a CSV table with a header row.

Columns: numbers are numeric features, anything else categorical (`dataset.categorical=[...]`,
`dataset.numeric=[...]` decide for the columns you name; `dataset.drop=[...]` leaves some out).
What the model reads is learned on the training rows only and saved with the run (the
`columns` of data_spec.json), so `dlx predict` and `dlx serve` prepare new rows the same way:

- numeric: a missing value becomes the training median; then (x - mean) / std of the training rows;
- categorical: one-hot over the values seen in training, a missing value being the value
  "<missing>"; a value never seen in training goes to the column's "<unknown>" slot (all zeros
  in training) instead of failing.

The target: classes are its distinct values (sorted as text), or with `dataset.task=regression`
a number. Rows are split stratified (classification) into train / val / test by
`dataset.val_split` / `dataset.test_split`, drawn with `dataset.data_seed`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from dlx.errors import DataError, DlxError

DESCRIPTIONS = {"csv": "your CSV table: dataset.path=FILE dataset.target=COLUMN (numeric and categorical columns)"}
MISSING, UNKNOWN = "<missing>", "<unknown>"
MOSTLY_NUMBERS = 0.9  # a text column whose values are this share numbers is a numeric column with typos


def read(path: Path, what: str):
    import pandas as pd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)  # mixed columns are read again below
            frame = pd.read_csv(path)  # in chunks: several times faster than low_memory=False
        # a column whose chunks parsed differently (numbers here, words there) is read again as
        # text, so every value of it keeps the file's spelling whichever chunk it fell in
        mixed = [i for i, dtype in enumerate(frame.dtypes) if dtype == object]
        if mixed:
            again = pd.read_csv(path, usecols=mixed, dtype=str)
            for i, name in zip(mixed, again.columns):
                frame.isetitem(i, again[name])
        return frame
    except FileNotFoundError:
        raise DataError(f"{what}={path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{what}={path}: a directory; expected a CSV file") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty; expected a header row and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV table ({str(exc).splitlines()[0]})") from None


def _numbers(column, name: str, path, first: int = 2) -> np.ndarray:
    """A column as float64 (NaN where empty); a value that is not a number is an error naming it."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)  # already numbers: nothing to parse
    else:
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    # a word where a number belongs, or an infinity (which no standardisation survives)
    bad = (np.isnan(values) & column.notna().to_numpy()) | np.isinf(values)
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        row = int(column.index[at])  # the row's place in the file, also within a subset of rows
        value = column.iloc[at]
        shown = repr(value) if isinstance(value, str) else str(value)  # 'eighty', inf
        raise DataError(f"{path}: row {row + first}, column {name}: {shown} is not a finite number "
                        f"(fix it, or list {name} in dataset.categorical)")
    return values


def _text(column):
    """A column as text, empty cells as MISSING (a pandas Series)."""
    import pandas as pd

    if pd.api.types.is_string_dtype(column) and not pd.api.types.is_object_dtype(column):
        return column.fillna(MISSING)  # already text (pandas' string dtype): no conversion
    return column.astype(object).where(column.notna(), MISSING).astype(str)


def _kinds(frame, cfg, path: Path) -> dict[str, str]:
    import pandas as pd

    forced = {**{c: "categorical" for c in cfg.categorical or []}, **{c: "numeric" for c in cfg.numeric or []}}
    for key in ("categorical", "numeric"):
        for name in getattr(cfg, key) or []:
            if name not in frame.columns:
                raise DlxError(f"dataset.{key}: no column {name!r} in {path}; columns: {', '.join(map(str, frame.columns))}")
    kinds = {}
    for name in frame.columns:
        column = frame[name]
        if column.isna().all():
            raise DataError(f"{path}: column {name} is empty in every row; leave it out with dataset.drop=[{name}]")
        if name in forced:
            kinds[name] = forced[name]
        elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            kinds[name] = "numeric"
        else:
            present = column.dropna()
            sample = present.iloc[:: max(1, len(present) // 2000)]  # enough to tell words from numbers with typos
            parsed = pd.to_numeric(sample, errors="coerce")
            kinds[name] = "numeric" if parsed.notna().mean() >= MOSTLY_NUMBERS else "categorical"
    return kinds


def fit_columns(frame, kinds: dict[str, str], path: Path) -> list[dict]:
    """Per column what the training rows say: median, mean and std, or the categories seen."""
    columns = []
    for name, kind in kinds.items():
        if kind == "numeric":
            x = _numbers(frame[name], name, path)
            median = float(np.nanmedian(x))
            filled = np.where(np.isnan(x), median, x)
            std = float(filled.std())
            columns.append({"name": str(name), "kind": "numeric", "fill": median, "mean": float(filled.mean()),
                            "std": std if std > 0 else 1.0})
        else:
            columns.append({"name": str(name), "kind": "categorical", "categories": sorted(_text(frame[name]).unique())})
    return columns


def feature_names(columns: list[dict]) -> list[str]:
    names = []
    for c in columns:
        names += [c["name"]] if c["kind"] == "numeric" else [f"{c['name']}={v}" for v in (UNKNOWN, *c["categories"])]
    return names


def transform(frame, columns: list[dict], where: str, first: int = 2, rows: np.ndarray | None = None) -> np.ndarray:
    """Rows (a DataFrame with at least the columns, in any order) -> the model's float32 features.
    `first`: how errors number the first row (2: a CSV's line under its header; 0: a list index).
    `rows`: which rows, in which order (every value is checked either way); default all."""
    missing = [c["name"] for c in columns if c["name"] not in frame.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}; the run was trained on "
                        f"{', '.join(c['name'] for c in columns)}")
    import pandas as pd

    width = sum(1 if c["kind"] == "numeric" else len(c["categories"]) + 1 for c in columns)
    pick = (lambda a: a) if rows is None else (lambda a: a[rows])
    n = len(frame) if rows is None else len(rows)
    out = np.zeros((n, width), np.float32)  # filled column by column: no per-column copies
    at = 0
    for c in columns:
        column = frame[c["name"]]
        if c["kind"] == "numeric":
            x = pick(_numbers(column, c["name"], where, first))
            out[:, at] = (np.where(np.isnan(x), c["fill"], x) - c["mean"]) / c["std"]
            at += 1
        else:
            ids = pick(pd.Categorical(_text(column), categories=c["categories"]).codes.astype(np.int64)) + 1  # 0: <unknown>
            out[np.arange(n), at + ids] = 1.0
            at += len(c["categories"]) + 1
    return out


def split_rows(y: np.ndarray, cfg, classify: bool) -> dict[str, np.ndarray]:
    """Row indices of train / val / test: stratified for classes, drawn with dataset.data_seed."""
    from sklearn.model_selection import train_test_split

    n = len(y)
    rows = np.arange(n)
    held = cfg.val_split + cfg.test_split
    if not 0 < held < 1:
        raise DlxError(f"dataset.val_split + dataset.test_split: expected a fraction in (0, 1), got {held}")
    if round(n * cfg.val_split) < 1 or round(n * cfg.test_split) < 1:
        raise DataError(f"{n} rows are too few for dataset.val_split={cfg.val_split} and test_split={cfg.test_split}")
    strat = y if classify and np.unique(y, return_counts=True)[1].min() >= 3 else None
    try:
        train, rest = train_test_split(rows, test_size=held, stratify=strat, random_state=cfg.data_seed)
        again = strat is not None and np.unique(y[rest], return_counts=True)[1].min() >= 2
        val, test = train_test_split(rest, test_size=cfg.test_split / held, stratify=y[rest] if again else None,
                                     random_state=cfg.data_seed)
    except ValueError as exc:
        raise DataError(f"cannot split {n} rows into train / val / test ({exc})") from None
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def load(cfg):
    import pandas as pd

    from dlx.data.types import Data, DataSpec, Split

    if not cfg.path:
        raise DlxError("dataset.path: dataset=csv needs the CSV file (dataset.path=FILE dataset.target=COLUMN)")
    path = Path(cfg.path).expanduser()
    frame = read(path, "dataset.path")
    if not cfg.target:
        raise DlxError(f"dataset.target: name the column to predict; {path} has: {', '.join(map(str, frame.columns))}")
    if cfg.target not in frame.columns:
        raise DataError(f"dataset.target: no column {cfg.target!r} in {path}; columns: {', '.join(map(str, frame.columns))}")
    target = frame[cfg.target]
    if target.isna().any():
        row = int(np.flatnonzero(target.isna().to_numpy())[0])
        raise DataError(f"{path}: row {row + 2} has no {cfg.target} (the target); every row needs one")
    regression = str(cfg.task) == "regression"
    if regression:
        y_all = _numbers(target, cfg.target, path).astype(np.float32)
        classes: list[str] = []
    else:
        codes, uniques = pd.factorize(_text(target), sort=True)  # classes sorted as text
        classes = [str(v) for v in uniques]
        if len(classes) < 2:
            raise DataError(f"{path}: the target {cfg.target} has one value ({classes[0]!r}); a classifier needs two or more")
        y_all = codes.astype(np.int32)
    for name in cfg.drop:
        if name not in frame.columns:
            raise DlxError(f"dataset.drop: no column {name!r} in {path}; columns: {', '.join(map(str, frame.columns))}")
    features = frame.drop(columns=[cfg.target, *(d for d in cfg.drop if d != cfg.target)])
    if features.shape[1] == 0:
        raise DataError(f"{path}: no feature columns left besides the target")
    kinds = _kinds(features, cfg, path)
    for name, kind in kinds.items():  # a typo anywhere is reported before anything is fitted
        if kind == "numeric":
            _numbers(features[name], name, path)
    rows = split_rows(y_all, cfg, not regression)
    columns = fit_columns(features.iloc[rows["train"]], kinds, path)
    order = np.concatenate([rows["train"], rows["val"], rows["test"]])  # one array; the splits are views of it
    x_all, y_all = transform(features, columns, str(path), rows=order), y_all[order]
    names = feature_names(columns)
    spec = DataSpec("csv", (len(names),), max(len(classes), 1), classes, 1.0, scaling="none", kind="tabular",
                    task="regression" if regression else "classification", feature_names=names, columns=columns)
    y_all = y_all.reshape(-1, 1) if regression else y_all
    ends = np.cumsum([len(rows["train"]), len(rows["val"])])
    parts = {k: Split(x_all[a:b], y_all[a:b]) for k, a, b in zip(("train", "val", "test"), (0, *ends), (*ends, len(order)))}
    if cfg.subset is not None:
        parts["train"] = Split(parts["train"].x[: cfg.subset], parts["train"].y[: cfg.subset])
    split_file = {k: (v + 2).tolist() for k, v in rows.items()}  # CSV line numbers (the header is line 1)
    raw_test = features.iloc[rows["test"][:5]][[c["name"] for c in columns]]  # the MLflow model's input example
    return Data(parts["train"], parts["val"], parts["test"], spec, str(path), extra={"split": split_file, "raw_test": raw_test})


LOADERS = {"csv": load}
