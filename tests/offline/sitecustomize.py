"""Installs the test suite's offline guard in every Python process started with this folder on PYTHONPATH.

``tests/conftest.py`` puts this folder first on ``PYTHONPATH`` so that subprocesses the tests start (Airflow
and MLflow servers, CLI calls, task runners) refuse non-loopback connections too: see ``_airloop_offline``.
A ``sitecustomize`` is the hook Python runs at start-up from ``sys.path``; a ``.pth`` file would only be read
from a site-packages folder, which the tests must not write to.
"""

from _airloop_offline import install

install()
