"""One exception class per failure an executor author or user can act on.

Every error names where the fault is: the file, the 1-based line and the key, when known, and
carries the monitor.txt return code the executor wrapper reports for it::

    from ymir_exc.errors import AnnotationError
    try:
        ...
    except AnnotationError as e:
        print(e.path, e.line, e.key, e.return_code)   # '/in/annotations/ab.txt' 3 'xmax' 300002

All classes derive from :class:`YmirExcError`, which derives from ``ValueError`` so that code
written for the upstream SDK (which raised ``ValueError``) keeps catching them.
"""

from __future__ import annotations

from ymir_exc.code import ExecutorReturnCode as RC


class YmirExcError(ValueError):
    """Base class. ``str(err)`` reads ``<path>:<line>: key '<key>': <message>``.

    Attributes:
        message: what is wrong, in words.
        path: the file at fault, or None.
        line: 1-based line number in ``path``, or None.
        key: the key / field / column at fault, or None.
        return_code: the monitor.txt return code for this failure.

    Example::

        >>> err = ConfigFileError("must be a positive integer", path="/in/config.yaml", line=3, key="epochs")
        >>> str(err)
        "/in/config.yaml:3: key 'epochs': must be a positive integer"
        >>> int(err.return_code)
        300001
    """

    return_code: int = RC.RC_CMD_CONTAINER_ERROR

    def __init__(
        self, message: str, *, path: str | None = None, line: int | None = None, key: str | None = None
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.key = key
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.path:
            where = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        if self.key:
            where += f"key '{self.key}': "
        return where + self.message


class EnvFileError(YmirExcError):
    """env.yaml is missing, not YAML, or has a key of the wrong type / an unknown protocol_version.

    Example::

        raise EnvFileError("unknown protocol_version '9.0'", path="/in/env.yaml", key="protocol_version")
    """

    return_code = RC.RC_EXEC_CONFIG_ERROR


class ConfigFileError(YmirExcError):
    """config.yaml (or the code_config it names) is missing, not YAML or has a bad value.

    Example::

        raise ConfigFileError("must be a positive integer", path="/in/config.yaml", key="epochs")
    """

    return_code = RC.RC_EXEC_CONFIG_ERROR


class IndexFileError(YmirExcError):
    """An index file is not set, missing, unreadable, or has a blank / malformed line.

    Example::

        raise IndexFileError("expected <image>\\t<annotation>", path="/in/train-index.tsv", line=7)
    """

    return_code = RC.RC_EXEC_DATASET_ERROR


class AnnotationError(YmirExcError):
    """An annotation file is missing or a line / element of it does not parse or is out of range.

    Example::

        raise AnnotationError("class index 5 >= len(class_names) 2", path=ann_path, line=3)
    """

    return_code = RC.RC_EXEC_DATASET_ERROR


class ImageError(YmirExcError):
    """An image is missing, unreadable or not a decodable image.

    Example::

        raise ImageError("cannot identify image file", path=image_path)
    """

    return_code = RC.RC_EXEC_IMAGE_FORMAT_ERROR


class ModelError(YmirExcError):
    """Model weights are missing or unusable, or a model package is invalid.

    Example::

        raise ModelError("no .pt file in model_params_path", key="model_params_path")
    """

    return_code = RC.RC_EXEC_MODEL_ERROR


class ResultError(YmirExcError):
    """A result handed to a writer breaks the contract (bad stage name, missing stage file,
    non-finite score, metric outside [0, 1], fractional box, duplicate basename, ...).
    Nothing is written when this is raised.

    Example::

        raise ResultError("mAP 1.7 is outside [0, 1]", key="mAP")
    """

    return_code = RC.RC_CMD_CONTAINER_ERROR


class MonitorError(YmirExcError):
    """A progress value outside [0, 1] or not a number.

    Example::

        raise MonitorError("percent nan is not a number in [0, 1]")
    """

    return_code = RC.RC_CMD_CONTAINER_ERROR


class NotSupportedError(YmirExcError, NotImplementedError):
    """A call the SDK (like the upstream one) does not implement, e.g.
    ``write_infer_result(..., algorithm="classification")``. Also a ``NotImplementedError``.

    Example::

        raise NotSupportedError("classification results are not supported", key="algorithm")
    """

    return_code = RC.RC_CMD_CONTAINER_ERROR
