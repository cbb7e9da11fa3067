"""Where the configs live and how Hydra learns the schemas: the command schemas, each group's
schema (the model group's from the families, dlx/families/), and experiments/ as a group."""

from __future__ import annotations

from pathlib import Path

from dlx.config import conf_dir, experiments_dir  # noqa: F401 (where the CLI and the tests find them)


def register() -> None:
    """Put the schemas in Hydra's ConfigStore; group YAMLs name them in their defaults list."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from dlx import config, family

    cs = ConfigStore.instance()
    for command, node in config.COMMANDS.items():
        cs.store(name=f"{command}_schema", node=node)
    for group, node in config.SCHEMAS.items():
        cs.store(group=f"schema/{group}", name="base", node=node)
    for name, node in family.builtin().items():
        cs.store(group="schema/model", name=name, node=node)
    # experiments/*.yaml become the `experiment` group (`dlx train experiment=NAME`)
    for path in sorted(experiments_dir().glob("*.yaml")):
        cs.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")


# commands whose keys share a name with a config group of conf/ (`dlx serve model=models:/...` is
# the registered model, not the model group): their YAML lives apart, where no group is seen
STANDALONE = ("serve",)


def command_conf_dir(command: str) -> Path:
    return conf_dir() / "_standalone" if command in STANDALONE else conf_dir()


def check_command(command: str, cfg: dict) -> None:
    """The ranges of a composed command config (plain values): its own keys, and for `train`
    every group's and the model family's."""
    from dlx.config import COMMANDS, SCHEMAS
    from dlx.ranges import check_ranges

    check_ranges(COMMANDS[command], cfg)
    if command == "train":
        from dlx.family import resolve

        for group, schema in SCHEMAS.items():
            if isinstance(cfg.get(group), dict) and "_target_" not in cfg[group]:
                check_ranges(schema, cfg[group], f"{group}.")
        family = resolve(cfg["model"])
        import dataclasses

        if dataclasses.is_dataclass(family):
            check_ranges(family, cfg["model"], "model.")
