"""Model families. `dlx/models/<name>.py` defines `build(model_cfg, reg_cfg, spec) -> keras.Model`
for `model=<name>`; modules are imported only when a command needs that family."""

from __future__ import annotations

import importlib

from dlx.errors import DlxError


def build(model_cfg, reg_cfg, spec):
    try:
        module = importlib.import_module(f"dlx.models.{model_cfg.name}")
    except ModuleNotFoundError:
        raise DlxError(f"model.name: no model family '{model_cfg.name}' in dlx/models/") from None
    return module.build(model_cfg, reg_cfg, spec)
