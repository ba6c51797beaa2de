"""Thread limits for predictions on a few rows: a training run's after ``fit`` (evaluation, permutation importance,
plots), the gate's on its holdout (``steps.predict_with``) and the monitor's on its window samples.

scikit-learn's histogram gradient boosting (and BLAS) predict with a pool of OpenMP threads on every core. On the
few thousand holdout rows of a run, starting and synchronising that pool costs more than the prediction itself,
and on a busy machine the threads wait for each other: permutation importance (about twenty predictions of 1,000
rows) took 7.7-14 s with the pool and 0.5-0.9 s on one thread on this project's shared 2-core machine (issue 16).
``fit`` keeps every core: it is not wrapped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

#: Predictions on at most this many rows run on one thread; a larger holdout keeps the library's own threads.
FEW_ROWS = 50_000


@contextmanager
def few_rows(rows: int) -> Iterator[None]:
    """Limit OpenMP and BLAS to one thread while predicting on ``rows`` rows, when they are at most :data:`FEW_ROWS`."""
    if rows > FEW_ROWS:
        yield
        return
    # threadpoolctl (scikit-learn's own dependency) is the one way to limit the thread pools of the native
    # libraries already loaded in the process (OpenMP, OpenBLAS, MKL) for a block and restore them after.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield
