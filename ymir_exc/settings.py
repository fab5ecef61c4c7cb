"""Default locations of the two input files an executor reads.

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
