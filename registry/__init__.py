"""The MLflow model registry, as training and serving both use it.

Training registers versions and moves the ``challenger`` and ``champion`` aliases;
serving resolves an alias, downloads the version's bundle and follows the alias; the
admin endpoints and the ``aiops`` command line move it by hand. This package is the one
place that reads and writes the registry, below both (``features`` ← ``models`` ←
``registry`` ← ``training``, ``serving`` ← ``cli``), so that neither imports the other.
"""

#: The registered model trained and served when none is named.
DEFAULT_MODEL_NAME = "novaevo-detectors"
