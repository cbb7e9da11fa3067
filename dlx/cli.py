"""`dlx <command> [overrides]`: compose the command's config with Hydra and run it.

Nothing heavy is imported here: `dlx --help` must answer instantly, and config errors must be
reported before TensorFlow is loaded. Errors the user can fix print one line and exit 2.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys

# command -> one-line description; hydra commands compose conf/<command>.yaml
HYDRA_COMMANDS = {
    "train": "train a model: dlx train model=cnn dataset=mnist optimizer.lr=0.01",
    "eval": "re-evaluate a run's best model: dlx eval run=outputs/DATE/TIME",
    "predict": "run a model on new inputs (images, CSV rows, .txt): dlx predict run=DIR inputs='imgs/*.png'",
    "sample": "draw from a generative run (rbm, dbn: Gibbs chains; autoencoders): dlx sample run=DIR seed=1",
    "promote": "register a run's model as the champion if it beats the current one: dlx promote run=DIR",
    "serve": "a run's model over HTTP, with a page to draw or upload a digit: dlx serve run=DIR",
}
OTHER_COMMANDS = {
    "data": "list or download datasets: dlx data list | dlx data download mnist",
    "report": "run the book presets, write a results table: dlx report experiments [--quick]",
    "worker": "run the training jobs queued by dlx serve: dlx worker --state-dir outputs/serve",
    "users": "API keys for dlx serve: dlx users add NAME | list | revoke KEY_ID",
    "runs": "a sweep's jobs (or a folder of runs) as a table, best first: dlx runs multirun/DATE/TIME",
    "completion": "shell tab completion for commands and overrides: eval \"$(dlx completion bash)\" (or zsh)",
}


def _groups() -> dict[str, list[str]]:
    from dlx.schemas import conf_dir, experiments_dir

    root = conf_dir()
    groups = {
        str(d.relative_to(root)): sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(root.rglob("*"))
        if d.is_dir() and not d.name.startswith((".", "_")) and any(d.glob("*.yaml"))
    }
    # Hydra's own launcher and the plugins' ones that dlx does not wrap
    groups["hydra/launcher"] = ["basic (default)", *groups.get("hydra/launcher", []), "submitit_local"]
    groups["experiment"] = sorted(p.stem for p in experiments_dir().glob("*.yaml"))
    return dict(sorted(groups.items()))


def print_help() -> None:
    lines = ["usage: dlx <command> [key=value ...] [hydra flags: -m, --cfg job, --info, --help]", ""]
    lines.append("commands:")
    for name, desc in {**HYDRA_COMMANDS, **OTHER_COMMANDS}.items():
        lines.append(f"  {name:<9}{desc}")
    lines += ["", "config groups (pick one with group=option, e.g. model=cnn):"]
    for group, options in _groups().items():
        lines.append(f"  {group:<16}{', '.join(options)}")
    lines += [
        "",
        "`dlx train --help` shows the composed config; `dlx train --cfg job` prints it.",
        "Runs land in outputs/<date>/<time>/; tensorboard --logdir outputs; "
        "mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db",
    ]
    print("\n".join(lines))


def _error(command: str, message: str) -> int:
    print(f"dlx {command}: error: {message}", file=sys.stderr)
    return 2


def _describe_config_error(exc: BaseException) -> str:
    """One line for a Hydra/OmegaConf composition error (they are multi-line by default)."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException) and exc.options is not None:
        group, _, option = (exc.missing_cfg_file or "").rpartition("/")
        return f"unknown {group} '{option}'; choose one of: {', '.join(exc.options)}"
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    text = str(cause).strip()
    first = text.splitlines()[0] if text else type(cause).__name__
    # OmegaConf appends "full_key: ..., object_type=..." detail lines; keep the key
    key = getattr(cause, "full_key", None)
    if key and key not in first:
        first = f"{key}: {first}"
    return first.rstrip(".")


MULTIRUN_FLAGS = ("-m", "--multirun")
# keys whose value is a directory; a sweep job's directory has `=` in its name (0_model=cnn)
PATH_KEYS = ("run", "resume", "out", "hydra.run.dir", "hydra.sweep.dir")


def quote_paths(args: list[str]) -> list[str]:
    """`run=multirun/X/0_model=cnn` as Hydra can parse it: the directory quoted as one string."""
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and key in PATH_KEYS and "=" in value and value[:1] not in ("'", '"'):
            arg = f"{key}='" + value.replace("'", "\\'") + "'"
        out.append(arg)
    return out


def run_hydra(command: str, args: list[str]) -> int:
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from dlx import config, schemas
    from dlx.errors import DlxError, Preempted

    schemas.register()
    args = quote_paths(args)
    if command == "train" and any(a.startswith("resume=") for a in args) and not any(a in MULTIRUN_FLAGS for a in args):
        try:
            from dlx.commands.train import resume_overrides

            task, passthrough = resume_overrides(args)
            args = quote_paths(task) + passthrough
        except DlxError as exc:
            return _error(command, str(exc))
        except (HydraException, OmegaConfBaseException) as exc:
            return _error(command, _describe_config_error(exc))
    user_wants_traces = os.environ.get("HYDRA_FULL_ERROR") == "1"
    # let exceptions reach us instead of Hydra's multi-line report + exit 1
    os.environ["HYDRA_FULL_ERROR"] = "1"

    failures: list[str] = []

    @hydra.main(version_base="1.3", config_path=str(schemas.command_conf_dir(command)), config_name=command)
    def task(cfg):  # type: ignore[no-untyped-def]
        module = importlib.import_module(f"dlx.commands.{command}")
        try:
            if command != "train":  # train checks inside its run directory's clean-up (dlx.commands.train)
                schemas.check_command(command, config.plain(cfg))
            return module.main(cfg)
        except (DlxError, OmegaConfBaseException) as exc:
            # reported here, one line each; in a sweep the other jobs still run
            if user_wants_traces:
                raise
            message = str(exc) if isinstance(exc, DlxError) else _describe_config_error(exc)
            failures.append(message)
            _error(command, message)
            return None

    saved_argv = sys.argv
    sys.argv = [f"dlx-{command}", *args]
    try:
        task()
    except (HydraException, OmegaConfBaseException) as exc:
        _abandon_sweep()
        if user_wants_traces:
            raise
        return _error(command, _describe_config_error(exc))
    except DlxError as exc:  # from a sweeper or launcher, outside any one job
        _abandon_sweep()
        if user_wants_traces:
            raise
        return _error(command, str(exc))
    except KeyboardInterrupt:
        _abandon_sweep("KILLED")
        print(f"dlx {command}: interrupted", file=sys.stderr)
        return 130
    except Preempted as exc:
        print(f"dlx {command}: {exc}", file=sys.stderr)
        return 128 + exc.signum
    finally:
        sys.argv = saved_argv
        if not user_wants_traces:
            os.environ.pop("HYDRA_FULL_ERROR", None)
    return 2 if failures else 0


def _abandon_sweep(status: str = "FAILED") -> None:
    """A sweep that stopped on its own error takes back what it had made (see `sweeps.abandon`)."""
    sweeps = sys.modules.get("dlx.sweeps")
    if sweeps is not None:
        try:
            sweeps.abandon(status)
        except Exception as exc:  # the error being reported matters more
            print(f"dlx: could not clean up after the sweep: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_help()
        return 0
    if argv[0] in ("-V", "--version"):
        from dlx import __version__

        print(f"dlx {__version__}")
        return 0
    command, args = argv[0], argv[1:]
    if command in HYDRA_COMMANDS:
        return run_hydra(command, args)
    if command in OTHER_COMMANDS:
        module = importlib.import_module(f"dlx.commands.{command}")
        return module.main(args)
    return _error(command, f"unknown command; choose one of: {', '.join([*HYDRA_COMMANDS, *OTHER_COMMANDS])}")


def entry() -> None:
    """The `dlx` console script: `main`, then exit. Start-up collects garbage less often (see
    `dlx.startup`). Everything alive at exit lives until the process ends, so it is kept out of
    the interpreter's last garbage collections, which with MLflow and Hydra loaded are slow."""
    from dlx import startup

    startup.begin()
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
