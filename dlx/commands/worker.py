"""`dlx worker [--state-dir DIR]`: run the training jobs queued by `dlx serve` (serve.worker=none).

A separate process per worker, on the server's state directory; a failing job is recorded and
the worker goes on. Predict jobs need the served model and stay with the server's own worker.
"""

from __future__ import annotations

import argparse
import logging

from dlx.config import ServeSettings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dlx worker", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", default=ServeSettings.state_dir)
    parser.add_argument("--workers", type=int, default=1, help="jobs run at once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    from dlx import startup
    from dlx.serve.jobs import Jobs

    startup.end()  # a long-lived process: the usual garbage collection from here on
    jobs = Jobs(args.state_dir)
    consumer = jobs.huey.create_consumer(workers=args.workers, periodic=False)
    consumer.run()  # until SIGINT/SIGTERM; huey finishes the running job first on SIGINT
    return 0
