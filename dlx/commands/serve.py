"""`dlx serve run=DIR`: the run's model behind an HTTP API and a page (dlx/serve/app.py)."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from dlx.errors import DlxError

log = logging.getLogger("dlx.serve")

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def settings_of(cfg: DictConfig) -> dict:
    from dlx.config import plain

    settings = plain(cfg)["serve"]
    if settings["auth"] == "none" and settings["host"] not in LOCAL_HOSTS:
        raise DlxError(f"serve.auth=none serves unsigned requests: only on 127.0.0.1, not serve.host={settings['host']}")
    for key in ("max_upload_bytes", "max_batch", "timeout_s"):
        if settings[key] <= 0:
            raise DlxError(f"serve.{key}: expected a positive number, got {settings[key]}")
    return settings


def source_of(cfg: DictConfig) -> str:
    if (cfg.run is None) == (cfg.model is None):
        raise DlxError("give one of run=DIR (a training run) or model=models:/NAME@champion (a registered model)")
    if cfg.model is not None:
        from dlx.serve import registry

        registry.parse(cfg.model)
        return str(cfg.model)
    return str(cfg.run)


def main(cfg: DictConfig) -> None:
    import uvicorn

    from dlx.serve.app import create_app

    settings = settings_of(cfg)
    source = source_of(cfg)
    app = create_app(source, settings)
    log.info("serving %s (version %s) on http://%s:%d/ (auth %s)", source, app.state.current.served.version,
             settings["host"], settings["port"], settings["auth"])
    from dlx import startup

    startup.end()  # a long-lived process: the usual garbage collection from here on
    uvicorn.run(app, host=settings["host"], port=settings["port"], log_level="warning")
