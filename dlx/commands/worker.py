"""`dlx worker [--state-dir DIR]`: run the training jobs queued by `dlx serve` (serve.worker=none).

A separate process per worker, on the server's state directory; a failing job is recorded and
the worker goes on. Predict jobs need the served model and stay with the server's own worker.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from dlx.config import ServeSettings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dlx worker", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", default=ServeSettings.state_dir)
    parser.add_argument("--workers", type=int, default=1, help="jobs run at once")
    parser.add_argument("--job-timeout-s", type=float, default=ServeSettings.job_timeout_s,
                        help="a training job's wall-clock limit (serve.job_timeout_s)")
    parser.add_argument("--job-threads", type=int, default=None,
                        help="TensorFlow threads per job unless it sets trainer.threads (default: all the cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    from dlx import startup
    from dlx.serve.jobs import Jobs

    startup.end()  # a long-lived process: the usual garbage collection from here on
    if not 0 < args.job_timeout_s <= 1e8 or not 1 <= args.workers <= 1024:
        print("dlx worker: error: --job-timeout-s expects (0, 1e8] seconds and --workers 1..1024", file=sys.stderr)
        return 2
    jobs = Jobs(args.state_dir, timeout_s=args.job_timeout_s, threads=args.job_threads or os.cpu_count() or 1)
    consumer = jobs.huey.create_consumer(workers=args.workers, periodic=False)
    consumer.run()  # until SIGINT/SIGTERM; huey finishes the running job first on SIGINT
    return 0
