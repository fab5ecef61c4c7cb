"""Declarative hyper-parameters: one pydantic model per task, checked against its img-man template.

An executor declares its config.yaml keys once, as fields with a default, a range
(``ge`` / ``gt`` / ``le`` / ``lt``), ``Literal`` choices and a description; ``from_config`` reads
them and a bad value is a :class:`~ymir_exc.errors.ConfigFileError` (return code 300001) naming
the key, the value and what is allowed. Example::

    >>> from typing import Literal
    >>> from pydantic import Field
    >>> from ymir_exc.params import HyperParams
    >>> class MiningParams(HyperParams):
    ...     batch_size: int = Field(16, ge=1, description="images per forward pass")
    ...     conf_threshold: float = Field(0.25, ge=0.0, le=1.0, description="detections need p >= this")
    ...     half: bool = Field(False, description="fp16 inference on GPU")
    ...     mining_algorithm: Literal["entropy", "random"] = Field("entropy", description="score of an image")
    >>> p = MiningParams.from_config({"batch_size": "8", "conf_threshold": "0.5", "half": "yes",
    ...                               "mining_algorithm": " Random", "gpu_id": "0", "task_id": "t1"})
    >>> (p.batch_size, p.conf_threshold, p.half, p.mining_algorithm)
    (8, 0.5, True, 'random')
    >>> MiningParams.from_config({"conf_threshold": 2})
    Traceback (most recent call last):
    ...
    ymir_exc.errors.ConfigFileError: config.yaml: key 'conf_threshold': must be a number in [0.0, 1.0], got 2
    >>> for problem in MiningParams.template_problems({"batch_size": 16, "conf_threshold": 0.3, "nms": 0.5}):
    ...     print(problem)
    key 'conf_threshold': the template's default 0.3 is not the model's 0.25
    key 'nms': not a field of MiningParams

How config values are read (the platform's config.yaml often holds numbers as strings):

- keys the model does not declare are ignored: the platform's reserved keys (``class_names``,
  ``gpu_id``, ``task_id``, ...) and any other; a key set to null (``~``) takes its default;
- ``int`` fields take integers, integral floats (``8.0``) and strings of either (``"8"``,
  ``" 8.0 "``); never a boolean;
- ``float`` fields take numbers and strings of numbers (``"0.5"``, ``"1e-3"``); never a boolean,
  NaN or infinity;
- ``bool`` fields take ``True`` / ``False``, the integers 1 / 0 and, in any case with surrounding
  blanks ignored, the strings ``true t yes y on 1`` / ``false f no n off 0`` (what
  :func:`ymir_exc.util.get_bool` accepts, plus yes / no / on / off);
- ``Literal`` fields take one of their choices, matched without surrounding blanks and without
  case (``" Random"`` is ``"random"``); a YAML boolean or number is matched by its text
  (``false`` -> ``"false"``);
- ``str`` fields take strings, and numbers or booleans as their text;
- anything else (lists, mappings, ...) is validated by pydantic's strict rules. Validators of the
  subclass (``@field_validator``) raise ``ValueError("must be ..., got ...")``: the message
  becomes the error's.

Keep the img-man templates equal to the model: :meth:`HyperParams.template_problems` lists every
template key the model does not declare, every default that differs and every field without a
description (a test per executor asserts the list is empty). A template may set only some of the
model's fields: one model can serve several tasks, each template holding the keys its task reads.
:meth:`HyperParams.render_template` writes a template from the model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.fields import FieldInfo

from ymir_exc.errors import ConfigFileError

__all__ = ["HyperParams", "TRUE_WORDS", "FALSE_WORDS"]

_P = TypeVar("_P", bound="HyperParams")

#: strings a ``bool`` field reads as True (lower case; blanks around them are ignored)
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "on", "1"})
#: strings a ``bool`` field reads as False
FALSE_WORDS = frozenset({"false", "f", "no", "n", "off", "0"})


class HyperParams(BaseModel):
    """Base of an executor's hyper-parameters: subclass it with one field per config.yaml key.

    Fields are declared with ``pydantic.Field(default, ge=..., le=..., description=...)`` or a
    ``Literal[...]`` of choices; every field needs a default (a template sets every key): a
    subclass with a field without one raises ``TypeError`` when it is defined. Values
    are read as the module docstring says; unknown keys are ignored. Instances are plain pydantic
    models (``p.epochs``, ``p.model_dump()``).

    Example:
        >>> from pydantic import Field
        >>> class TrainParams(HyperParams):
        ...     epochs: int = Field(10, ge=1, le=1000, description="passes over the training set")
        >>> TrainParams.from_config({"epochs": "3"}).epochs
        3
        >>> print(TrainParams.render_template(header="my training hyper-parameters"), end="")
        # my training hyper-parameters
        <BLANKLINE>
        # passes over the training set
        epochs: 10
    """

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a subclass with a field that has no default, when the class is defined.

        Raises:
            TypeError: names the class and the fields without a default.
        """
        super().__pydantic_init_subclass__(**kwargs)
        required = [name for name, field in cls.model_fields.items() if field.is_required()]
        if required:
            raise TypeError(
                f"{cls.__name__}: every hyper-parameter needs a default (a template sets every key); "
                f"no default: {', '.join(required)}"
            )

    @model_validator(mode="before")
    @classmethod
    def _read_config_values(cls, data: Any) -> Any:
        """Drop unknown and null keys, coerce config strings (module docstring) before validation."""
        if not isinstance(data, Mapping):
            return data
        out = {}
        for key, value in data.items():
            field = cls.model_fields.get(key)
            if field is None or (value is None and not field.is_required()):
                continue
            out[key] = _coerce(field.annotation, value)
        return out

    @classmethod
    def from_config(cls: type[_P], config: Mapping[str, Any], *, source: str = "config.yaml") -> _P:
        """Read the declared keys of ``config`` (the merged config.yaml: ``task.param`` or
        ``cfg.param``), with the defaults for the keys it lacks.

        Args:
            config: key -> value, as YAML loaded it.
            source: the file named in the error.

        Returns:
            an instance of the subclass it is called on.

        Raises:
            ConfigFileError: a value of the wrong type, out of range or not among the choices;
                names ``source`` and the key, and says the value and what is allowed (the first
                bad key, in declaration order).
        """
        if not isinstance(config, Mapping):
            raise ConfigFileError(f"must be a mapping of hyper-parameters, got {type(config).__name__}", path=source)
        try:
            return cls.model_validate(config)
        except ValidationError as e:
            raise cls._config_error(e, config, source) from None

    @classmethod
    def _config_error(cls, err: ValidationError, config: Mapping[str, Any], source: str) -> ConfigFileError:
        first = err.errors(include_url=False)[0]
        key = str(first["loc"][0]) if first["loc"] else None
        if first["type"] == "value_error":  # a subclass's validator: its message says it all
            return ConfigFileError(str(first["ctx"]["error"]), path=source, key=key)
        if key is None or key not in cls.model_fields:
            return ConfigFileError(first["msg"], path=source, key=key)
        if key not in config:
            return ConfigFileError(f"missing: must be {cls.expects(key)}", path=source, key=key)
        return ConfigFileError(f"must be {cls.expects(key)}, got {config[key]!r}", path=source, key=key)

    @classmethod
    def expects(cls, key: str) -> str:
        """What field ``key`` accepts, in words: ``'an integer in [1, 64]'``, ``"one of ['a', 'b']"``.

        Raises:
            KeyError: ``key`` is not a field.
        """
        field = cls.model_fields[key]
        return _kind(field.annotation) + _bounds(field)

    @classmethod
    def template_problems(cls, template: Mapping[str, Any] | str | os.PathLike[str]) -> list[str]:
        """Differences between an img-man template and the model; empty when they agree.

        The template's keys may be a subset of the model's fields: one model can serve several
        tasks, each template setting only the keys its task reads (a field the template lacks is
        not a problem).

        Args:
            template: the template's mapping, or the path of its YAML file (``str`` or
                ``os.PathLike``); anything else (a list, a number) is reported as a problem.

        Returns:
            one line per problem: the template is empty, the template is not a mapping of keys, a key is not a field, a
            template value does not validate or differs from the field's default (compared after
            reading, so ``cache: false`` equals a default ``"false"``), a field the template sets
            has no description.

        Raises:
            OSError: the file cannot be read.
            yaml.YAMLError: it is not YAML.
        """
        if isinstance(template, (str, os.PathLike)):
            with open(template, encoding="utf-8") as f:
                template = yaml.safe_load(f)
            if template is None:
                return [f"empty template: {os.fspath(f.name)}"]
        if not isinstance(template, Mapping):
            return [f"the template is not a mapping of keys: {template!r}"]
        problems = []
        for key, value in template.items():
            field = cls.model_fields.get(key)
            if field is None:
                problems.append(f"key {key!r}: not a field of {cls.__name__}")
                continue
            if not field.description:
                problems.append(f"key {key!r}: the field has no description")
            default = field.get_default(call_default_factory=True)
            try:
                read = getattr(cls.from_config({key: value}), key)
            except ConfigFileError as e:
                problems.append(f"key {key!r}: the template's value does not validate: {e.message}")
                continue
            if read != default or type(read) is not type(default):
                problems.append(f"key {key!r}: the template's default {value!r} is not the model's {default!r}")
        return problems

    @classmethod
    def render_template(cls, keys: Sequence[str] | None = None, header: str = "") -> str:
        """An img-man template from the model: each key's description as ``#`` comment lines,
        then ``key: default`` (YAML).

        Args:
            keys: the fields to write, in order (default: every field, in declaration order).
            header: comment lines at the top (without ``#``), followed by a blank line.

        Returns:
            the YAML text, ending with a newline; ``yaml.safe_load`` of it gives the defaults.

        Raises:
            KeyError: a key that is not a field.
        """
        lines = [f"# {line}".rstrip() for line in header.splitlines()] + ([""] if header else [])
        for key in cls.model_fields if keys is None else keys:
            field = cls.model_fields[key]
            lines += [f"# {line}".rstrip() for line in (field.description or "").splitlines()]
            default = field.get_default(call_default_factory=True)
            lines.append(yaml.safe_dump({key: default}, default_flow_style=False, sort_keys=False).rstrip("\n"))
        return "\n".join(lines) + "\n"


def _coerce(annotation: Any, value: Any) -> Any:
    """``value`` as the field's type when it is a config spelling of one (module docstring);
    else unchanged (then strict validation rejects it)."""
    if isinstance(value, str) and annotation in (int, float, bool):
        text = value.strip()
        if annotation is bool:
            low = text.lower()
            return True if low in TRUE_WORDS else False if low in FALSE_WORDS else value
        try:
            value = int(text) if annotation is int else float(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return value
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if annotation is bool and type(value) is int and value in (0, 1):
        return bool(value)
    if get_origin(annotation) is Literal and isinstance(value, (str, int, float, bool)):
        text = str(value).strip().lower()
        for choice in get_args(annotation):
            if isinstance(choice, str) and choice.lower() == text:
                return choice
    if annotation is str and isinstance(value, (int, float, bool)):
        return str(value)
    return value


def _kind(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return f"one of {list(get_args(annotation))}"
    names = {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        dict: "a mapping",
        list: "a list",
    }
    return names.get(get_origin(annotation) or annotation, f"a {annotation}")


def _bounds(field: FieldInfo) -> str:
    limits = {name: getattr(m, name) for m in field.metadata for name in ("ge", "gt", "le", "lt") if hasattr(m, name)}
    lo = ("[", limits["ge"]) if "ge" in limits else ("(", limits["gt"]) if "gt" in limits else None
    hi = ("]", limits["le"]) if "le" in limits else (")", limits["lt"]) if "lt" in limits else None
    if lo and hi:
        return f" in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    if lo:
        return f" {'>=' if lo[0] == '[' else '>'} {lo[1]}"
    if hi:
        return f" {'<=' if hi[0] == ']' else '<'} {hi[1]}"
    return ""
