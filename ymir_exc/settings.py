"""Default locations of the two input files an executor reads, and the constants of the task
vocabulary (:data:`TASKS`, :data:`PROTOCOL_VERSION`) that the SDK and the harness share.

The platform mounts them at ``/in/env.yaml`` and ``/in/config.yaml``. Both can be moved with the
environment variables of the same names (read once, at import), and tests may assign the module
attributes directly; every reader looks them up at call time::

    from ymir_exc import settings
    settings.DEFAULT_ENV_FILE_PATH = "/tmp/w/in/env.yaml"
"""

import os

#: Path of env.yaml (the task description the platform writes). Default ``/in/env.yaml``.
DEFAULT_ENV_FILE_PATH: str = os.environ.get("DEFAULT_ENV_FILE_PATH", "/in/env.yaml")
#: Path of config.yaml (hyper-parameters: the image's template plus reserved keys).
DEFAULT_CONFIG_FILE_PATH: str = os.environ.get("DEFAULT_CONFIG_FILE_PATH", "/in/config.yaml")

#: The three tasks of the platform, in the order env.yaml's ``run_training`` / ``run_mining`` /
#: ``run_infer`` keys list them and a combined task (mining + infer) runs them.
TASKS: tuple[str, ...] = ("training", "mining", "infer")
#: The ``protocol_version`` the harness writes into env.yaml unless told otherwise
#: (``ymir-exc run --protocol-version``): the current platform's.
PROTOCOL_VERSION: str = "1.1.0"
