"""Model packages: reproducible packing, a local store, safe import and unpacking.

A package is a ``.tar.gz`` with ``<stage>/<file>`` members, optional
``attachments/<section>/<file>`` and ``ymir-info.yaml`` (docs/contract.md, model packages), stored as
``<model-location>/<sha1 of its bytes>``.

Better than the platform, on purpose: packing is reproducible (members sorted, mtimes, owners
and modes fixed, gzip mtime 0, no file name in the gzip header), so the same outputs give the same
hash; import refuses absolute, ``..``, symlink, hard-link and device members and any stage file
named but absent; a stored package's bytes are checked against its name before use.

Import reads the tar headers first, streaming (nothing is extracted until every header passed):
besides the unsafe members above it refuses duplicate names, a file that is also a folder of
another member (``w.pt`` beside ``w.pt/x``), a stage name longer than 100 bytes of UTF-8, more
than 10,000 members, a ``ymir-info.yaml`` over 1 MiB, and a "bomb": members whose sizes add up to
more than 100 times the package file's size while one of them is over 64 MiB or all of them add
up to over 1 GiB. Each limit is an
:class:`ImportLimits` field (``ymir-exc models import --max-members`` ...). Packing reads only
regular files and never follows a link.
"""

from __future__ import annotations

import builtins
import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from typing_extensions import Buffer

import yaml
from pydantic import ValidationError

from ymir_exc.env import parse_yaml_text
from ymir_exc.errors import ModelError
from ymir_exc.formats.package import INFO_NAME, PACKAGE_VERSION, ModelPackageInfo
from ymir_exc.formats.results import ModelStage, best_stage, primary_metric_key, to_builtin

LEGACY_STAGE_NAME = "default_best_stage"
#: longest stage name, in bytes of UTF-8 (a path component must stay well under 255 bytes)
MAX_STAGE_NAME_BYTES = 100


@dataclass(frozen=True)
class ImportLimits:
    """What :meth:`ModelStore.import_package` accepts (see the module docstring).

    Attributes:
        max_info_bytes: largest ``ymir-info.yaml``, bytes.
        max_members: most members (files and folders).
        max_expansion: the members' sizes may add up to this many times the package file's
            size (0: no such rule) ...
        bomb_member_bytes: ... unless no member is over this many bytes ...
        bomb_total_bytes: ... and they add up to at most this many bytes (many members just under
            ``bomb_member_bytes`` are a bomb too).
    """

    max_info_bytes: int = 1 << 20
    max_members: int = 10_000
    max_expansion: float = 100.0
    bomb_member_bytes: int = 64 << 20
    bomb_total_bytes: int = 1 << 30


#: what reading a package already in the store accepts: it passed import (perhaps with limits
#: raised by the user), so only memory stays bounded (ymir-info.yaml is read into memory)
STORED_LIMITS = ImportLimits(max_info_bytes=64 << 20, max_members=10**7, max_expansion=0)

#: the primary metric of a package by its object_type (as the platform reads it)
OBJECT_TYPE_METRIC = {2: "mAP", 3: "mIoU", 4: "maskAP"}
MIN_PREFIX = 6


def _natural(names: Any) -> list[str]:
    """``names`` sorted with their digit runs read as numbers: epoch_1, epoch_2, epoch_10."""
    import re

    return sorted(
        names, key=lambda n: [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(n)) if t]
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_model_location() -> Path:
    """``$YMIR_EXC_MODEL_LOCATION``, else ``~/.ymir-exc/models``."""
    env = os.environ.get("YMIR_EXC_MODEL_LOCATION")
    return Path(env) if env else Path.home() / ".ymir-exc" / "models"


Member = tuple[str, str | bytes]  # (arcname, source path or content)


def write_reproducible_targz(members: Sequence[Member], dest: str | Path) -> str:
    """Write a tar.gz whose bytes depend only on the members' names and contents.

    Returns:
        the hex sha1 of the written file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    names = [m[0] for m in members]
    if len(set(names)) != len(names):
        raise ModelError(f"duplicate package members: {sorted({n for n in names if names.count(n) > 1})}")
    files = set(names)
    under = sorted(n for n in names if any("/".join(n.split("/")[:i]) in files for i in range(1, n.count("/") + 1)))
    if under:
        raise ModelError(f"package members under another member that is a file (unpackable): {under[:5]}")
    h = hashlib.sha1()

    class _Hashing(io.RawIOBase):
        def __init__(self, f: BinaryIO) -> None:
            self.f = f

        def writable(self) -> bool:
            return True

        def write(self, b: Buffer) -> int:
            h.update(b)
            return self.f.write(b)

    with open(dest, "wb") as raw:
        sink = _Hashing(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=6) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for arcname, src in sorted(members, key=lambda m: m[0]):
                    ti = tarfile.TarInfo(arcname)
                    ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0o644, 0, 0, "", ""
                    if isinstance(src, bytes):
                        ti.size = len(src)
                        tar.addfile(ti, io.BytesIO(src))
                    else:
                        with _open_regular(src) as f:
                            ti.size = os.fstat(f.fileno()).st_size
                            tar.addfile(ti, f)
    return h.hexdigest()


def _open_regular(path: str) -> io.BufferedReader:
    """Open a regular file for reading without following a link.

    Raises:
        ModelError: a link, a fifo, a device or a folder.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise ModelError(
            f"cannot open a package member's source without following links: {e.strerror}", path=path
        ) from None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise ModelError("a package member's source is not a regular file (refused)", path=path)
    return f


def info_yaml(info: dict[str, Any]) -> bytes:
    return yaml.safe_dump(to_builtin(info), sort_keys=True, allow_unicode=True).encode("utf-8")


def build_info(
    executor_config: dict[str, Any], task_context: dict[str, Any], stages: dict[str, Any], best_stage_name: str
) -> dict[str, Any]:
    """ymir-info.yaml content (package_version 2.0.0), validated.

    Raises:
        ModelError: it breaks :class:`~ymir_exc.formats.ModelPackageInfo` (names the key).
    """
    info = {
        "executor_config": executor_config,
        "task_context": task_context,
        "stages": stages,
        "best_stage_name": best_stage_name,
        "package_version": PACKAGE_VERSION,
    }
    validate_info(info, INFO_NAME)
    return info


def validate_info(info: Any, where: str) -> ModelPackageInfo:
    if not isinstance(info, dict):
        raise ModelError(f"{INFO_NAME} must be a mapping", path=where)
    for key in ("executor_config", "stages", "best_stage_name", "task_context"):
        if key not in info:
            raise ModelError(f"required key missing: {key}", path=where, key=key)
    try:
        return ModelPackageInfo.model_validate(info)
    except ValidationError as e:
        err = e.errors()[0]
        raise ModelError(err["msg"], path=where, key=".".join(map(str, err["loc"])) or None) from None


def upgrade_info(info: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Upgrade a 1.1.0 package's info (``models: [files]``, files at the archive root) to 2.0.0.

    Returns:
        (new info, {old member name: new member name}).
    """
    if "stages" in info or "models" not in info:
        return info, {}
    files = info.get("models") or []
    if not isinstance(files, list) or not files:
        raise ModelError("'models' must be a non-empty list of files", path=where, key="models")
    ctx = dict(info.get("task_context") or {})
    m = ctx.get("mAP", info.get("mAP", 0.0))
    stage = {
        "stage_name": LEGACY_STAGE_NAME,
        "files": [os.path.basename(f) for f in files],
        "timestamp": int(ctx.get("timestamp", 0) or 0),
        "mAP": float(m or 0.0),
    }
    new = {k: v for k, v in info.items() if k != "models"}
    new.update(
        {
            "stages": {LEGACY_STAGE_NAME: stage},
            "best_stage_name": LEGACY_STAGE_NAME,
            "package_version": PACKAGE_VERSION,
            "task_context": ctx,
        }
    )
    return new, {f: f"{LEGACY_STAGE_NAME}/{os.path.basename(f)}" for f in files}


def _safe_member(m: tarfile.TarInfo, where: str) -> str:
    name = m.name
    p = PurePosixPath(name)
    if name.startswith("/") or p.is_absolute():
        raise ModelError(f"absolute member path refused: {name}", path=where)
    if ".." in p.parts:
        raise ModelError(f"member path with '..' refused: {name}", path=where)
    if m.issym() or m.islnk():
        raise ModelError(
            f"{'symlink' if m.issym() else 'hard link'} member refused: {name} -> {m.linkname}", path=where
        )
    if not (m.isfile() or m.isdir()):
        raise ModelError(f"special member refused (device, fifo, ...): {name}", path=where)
    return str(p)


def _check_names(m: tarfile.TarInfo, name: str, where: str) -> None:
    """Refuse a member name that is not UTF-8, has a component over 255 bytes, or whose stage
    (first component, for ``<stage>/<file>`` members) is over :data:`MAX_STAGE_NAME_BYTES`."""
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise ModelError(f"member name is not UTF-8: {name!r}", path=where) from None
    parts = name.split("/")
    if any(len(p.encode("utf-8")) > 255 for p in parts):
        raise ModelError(f"member name with a component over 255 bytes refused: {raw[:60]!r}...", path=where)
    if parts[0] != "attachments" and len(parts) > 1 and len(parts[0].encode("utf-8")) > MAX_STAGE_NAME_BYTES:
        raise ModelError(
            f"stage name {parts[0][:40]!r}... is {len(parts[0].encode('utf-8'))} bytes of UTF-8; "
            f"at most {MAX_STAGE_NAME_BYTES}",
            path=where,
        )


def scan_package(path: str | Path, limits: ImportLimits = ImportLimits()) -> tuple[Any, dict[str, tarfile.TarInfo]]:
    """Read a package's headers in one streaming pass, refusing it at the first header that
    breaks a rule (see the module docstring), and read ``ymir-info.yaml`` on the way.

    Memory: the headers (at most ``limits.max_members``) and ymir-info.yaml (at most
    ``limits.max_info_bytes``); member data is decompressed and skipped, never stored.

    Returns:
        (raw ymir-info content, {member name: TarInfo} of the regular files).

    Raises:
        ModelError: not a tar.gz, an unsafe or conflicting member, a limit exceeded, no or
            invalid ymir-info.yaml (file named).
    """
    where = str(path)
    try:
        package_size = os.stat(path).st_size
    except FileNotFoundError:
        raise ModelError("package not found", path=where) from None
    except OSError as e:
        raise ModelError(f"cannot read the package: {e.strerror}", path=where) from None
    files: dict[str, tarfile.TarInfo] = {}
    folders: set[str] = set()
    info: Any = None
    sizes = _Expansion(limits, package_size, where)
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for count, m in enumerate(tar, 1):
                if count > limits.max_members:
                    raise ModelError(f"more than {limits.max_members} members (limit: --max-members)", path=where)
                name = _place_member(m, files, folders, where)
                if m.isdir():
                    continue
                sizes.add(m.size)
                files[name] = m
                if name == INFO_NAME:
                    info = _read_info(tar, m, limits, where)
    except (tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError, OSError) as e:
        raise ModelError(f"not a tar.gz model package: {e}", path=where) from None
    if INFO_NAME not in files:
        raise ModelError(f"no {INFO_NAME} in the package", path=where)
    return info, files


def _place_member(m: tarfile.TarInfo, files: dict[str, tarfile.TarInfo], folders: set[str], where: str) -> str:
    """The member's safe name, its parent folders added to ``folders`` (and itself, for a folder).

    Raises:
        ModelError: an unsafe name or type, a name seen before, a file and a folder of the
            same name, a member under a file.
    """
    name = _safe_member(m, where)
    _check_names(m, name, where)
    if name in files or (m.isdir() and name in folders) or (m.isfile() and name in folders):
        raise ModelError(f"member {name!r} appears twice, or as both a file and a folder", path=where)
    parents = ["/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1)]
    clash = next((q for q in parents if q in files), None)
    if clash:
        raise ModelError(f"member {name!r} lies under {clash!r}, which is a file", path=where)
    folders.update(parents)
    if m.isdir():
        folders.add(name)
    return name


class _Expansion:
    """The members' sizes so far, against the decompression-bomb limits."""

    def __init__(self, limits: ImportLimits, package_size: int, where: str) -> None:
        self.limits, self.package_size, self.where = limits, package_size, where
        self.total = self.biggest = 0

    def add(self, size: int) -> None:
        """Count one member.

        Raises:
            ModelError: the members add up to over ``max_expansion`` times the package's size
                and one member or the total is over its bomb limit.
        """
        limits = self.limits
        self.total += size
        self.biggest = max(self.biggest, size)
        if (
            limits.max_expansion
            and self.total > limits.max_expansion * max(self.package_size, 1)
            and (self.biggest > limits.bomb_member_bytes or self.total > limits.bomb_total_bytes)
        ):
            why = (
                f"{self.biggest} bytes in one member"
                if self.biggest > limits.bomb_member_bytes
                else f"over {limits.bomb_total_bytes} bytes in all"
            )
            raise ModelError(
                f"members add up to {self.total} bytes, over {limits.max_expansion:g} times the "
                f"package's {self.package_size} bytes, and {why}: refused as a decompression "
                f"bomb (limits: --max-expansion, --bomb-member-size, --bomb-total-size)",
                path=self.where,
            )


def _read_info(tar: tarfile.TarFile, m: tarfile.TarInfo, limits: ImportLimits, where: str) -> Any:
    """ymir-info.yaml's content, parsed (not yet validated).

    Raises:
        ModelError: over ``max_info_bytes``, not UTF-8, not YAML.
    """
    if m.size > limits.max_info_bytes:
        raise ModelError(
            f"{INFO_NAME} is {m.size} bytes, over {limits.max_info_bytes} (limit: --max-info-size)", path=where
        )
    f = tar.extractfile(m)
    assert f is not None
    try:
        text = f.read(limits.max_info_bytes + 1).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelError(f"{INFO_NAME} is not valid YAML: {e}", path=where) from None
    return parse_yaml_text(text, ModelError, where, problem=f"{INFO_NAME} is not valid YAML")


def read_package(
    path: str | Path, limits: ImportLimits = ImportLimits()
) -> tuple[dict[str, Any], dict[str, tarfile.TarInfo]]:
    """Open a package, check every member, and return (raw ymir-info dict, {name: TarInfo}).
    Same checks as :func:`scan_package`.

    Raises:
        ModelError: not a tar.gz, an unsafe member, a limit exceeded, no or invalid ymir-info.yaml.
    """
    return scan_package(path, limits)


@dataclass
class StoredModel:
    """A package in the store."""

    hash: str
    path: Path
    info: ModelPackageInfo

    @property
    def class_names(self) -> list[str]:
        return list(self.info.executor_config["class_names"])

    @property
    def object_type(self) -> int | None:
        """The package's ``object_type`` (2 detection, 3 semantic segmentation, 4 instance
        segmentation): top-level in ymir-info.yaml as the platform packs it, else in
        ``task_context`` or ``executor_config``; None when no valid value is given."""
        extra = self.info.model_extra or {}
        for where in (extra, self.info.task_context, self.info.executor_config):
            value = where.get("object_type") if isinstance(where, dict) else None
            if isinstance(value, int) and not isinstance(value, bool) and value in OBJECT_TYPE_METRIC:
                return value
        return None

    def metric_name(self) -> str:
        """The primary metric's key: by ``object_type`` (2 -> mAP, 3 -> mIoU, 4 -> maskAP), else
        the first of maskAP > mIoU > mAP the best stage reports (mAP when none)."""
        if self.object_type is not None:
            return OBJECT_TYPE_METRIC[self.object_type]
        best = self.info.stages[self.info.best_stage_name].evaluation_result()
        return primary_metric_key(best) or "mAP"

    def mAP(self) -> float:
        """The best stage's primary metric (see :meth:`metric_name`); 0.0 when it is absent."""
        best = self.info.stages[self.info.best_stage_name].evaluation_result()
        return float(best.get(self.metric_name(), 0.0))

    def primary_metric(self) -> tuple[str, float]:
        """``(key, value)`` of the best stage's primary metric, e.g. ``("mIoU", 0.71)`` (see
        :meth:`metric_name`)."""
        return self.metric_name(), self.mAP()


class ModelStore:
    """Packages stored as ``<location>/<sha1>``."""

    def __init__(self, location: str | Path | None = None) -> None:
        self.location = Path(location) if location else default_model_location()

    def _finish(self, tmp: Path, digest: str) -> str:
        final = self.location / digest
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600: give it the user's usual mode
        os.replace(tmp, final)
        return digest

    def pack(self, members: Sequence[Member], info: dict[str, Any]) -> str:
        """Store a package of ``members`` + ``ymir-info.yaml``; returns its sha1."""
        self.location.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.location, prefix=".pack-", suffix=".tmp")
        os.close(fd)
        try:
            digest = write_reproducible_targz(list(members) + [(INFO_NAME, info_yaml(info))], tmp)
            return self._finish(Path(tmp), digest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def resolve(self, ref: str) -> Path:
        """``latest``, a full sha1 or a unique prefix (>= 6 chars) -> the stored file.

        Raises:
            ModelError: nothing or more than one package matches.
        """
        if not self.location.is_dir():
            raise ModelError("no model stored yet", path=str(self.location))
        stored = [p for p in self.location.iterdir() if p.is_file() and not p.name.startswith(".")]
        if ref == "latest":
            if not stored:
                raise ModelError("no model stored yet", path=str(self.location))
            return max(stored, key=lambda p: (p.stat().st_mtime_ns, p.name))
        match = [p for p in stored if p.name == ref]
        if match:
            return match[0]
        prefixed = [p for p in stored if p.name.startswith(ref)] if ref else []
        if len(ref) < MIN_PREFIX:
            raise ModelError(
                f"model {ref!r} is too short (min {MIN_PREFIX} characters of the hash)"
                + (f"; {len(prefixed)} package(s) start with it" if prefixed else ""),
                path=str(self.location),
            )
        if len(prefixed) > 1:
            raise ModelError(
                f"model {ref!r} is ambiguous: " + ", ".join(p.name[:12] for p in prefixed) + "; give more characters",
                path=str(self.location),
            )
        if not prefixed:
            raise ModelError(f"model {ref!r} not found (see ymir-exc models list)", path=str(self.location))
        return prefixed[0]

    def resolve_latest(self, executor: str | None = None) -> tuple[Path, bool]:
        """What ``--model latest`` means for a run of ``executor``: the newest package that
        executor produced (``task_context.executor`` of its ymir-info.yaml); when it produced
        none, the newest package of any executor.

        Returns:
            ``(stored file, whether it is the executor's own)``; ``own`` is True when
            ``executor`` is None.

        Raises:
            ModelError: the store is empty.
        """
        newest = self.resolve("latest")
        if executor is None:
            return newest, True
        stored = [p for p in self.location.iterdir() if p.is_file() and not p.name.startswith(".")]
        for p in sorted(stored, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True):
            try:
                produced_by = self.get(p.name, verify=False).info.task_context.get("executor")
            except ModelError:  # a corrupted file is no candidate (``models list`` reports it)
                continue
            if produced_by == executor:
                return p, True
        return newest, False

    def remove(self, ref: str) -> str:
        """Delete one stored package (``latest``, a full sha1 or a unique prefix); returns its hash.

        Raises:
            ModelError: see :meth:`resolve`.
        """
        path = self.resolve(ref)
        path.unlink()
        return path.name

    def prune(self, keep: int) -> builtins.list[str]:
        """Delete every package but the ``keep`` newest (by store time); returns the hashes removed.

        Raises:
            ValueError: ``keep`` < 0.
        """
        if keep < 0:
            raise ValueError(f"--keep must be >= 0, got {keep}")
        if not self.location.is_dir():
            return []
        stored = sorted(
            (p for p in self.location.iterdir() if p.is_file() and not p.name.startswith(".")),
            key=lambda p: (-p.stat().st_mtime_ns, p.name),
        )
        gone = []
        for p in stored[keep:]:
            p.unlink()
            gone.append(p.name)
        return gone

    def get(self, ref: str, verify: bool = True) -> StoredModel:
        """Load a stored package's info; with ``verify`` its bytes must hash to its name.

        Raises:
            ModelError: unknown ref, a hash mismatch (corrupted store), or an invalid package.
        """
        path = self.resolve(ref)
        if verify:
            from ymir_exc.harness.files import sha1_file

            actual = sha1_file(str(path))
            if actual != path.name:
                raise ModelError(f"stored package is corrupted: its sha1 is {actual}", path=str(path))
        raw, members = read_package(path, STORED_LIMITS)
        info = validate_info(raw, f"{path}:{INFO_NAME}")
        _check_stage_members(info, members, str(path))
        return StoredModel(path.name, path, info)

    def list(self) -> builtins.list[StoredModel]:
        """Every valid stored package, newest first (see :meth:`corrupt` for the others)."""
        return self.scan()[0]

    def corrupt(self) -> builtins.list[tuple[str, str]]:
        """``(file name, what is wrong)`` of every stored file that is not a valid package."""
        return self.scan()[1]

    def scan(self) -> tuple[builtins.list[StoredModel], builtins.list[tuple[str, str]]]:
        """(valid packages, newest first; ``(name, problem)`` of the corrupted ones)."""
        if not self.location.is_dir():
            return [], []
        out, bad = [], []
        for p in sorted(self.location.iterdir(), key=lambda p: -p.lstat().st_mtime_ns):
            if p.name.startswith("."):
                continue
            if p.is_symlink() or not p.is_file():
                bad.append((p.name, "not a regular file"))
                continue
            try:
                out.append(self.get(p.name, verify=False))
            except ModelError as e:
                bad.append((p.name, e.message))
        return out, bad

    def unpack(self, ref: str, dest_models_dir: str | Path, stage: str | None = None) -> dict[str, Any]:
        """Extract a package into ``dest_models_dir`` (``<stage>/<file>`` and attachments).

        Returns:
            ``{"hash", "class_names", "stage_name", "files": ["<stage>/<file>", ...], "info"}``
            with ``files`` the chosen stage's (default: the best stage).

        Raises:
            ModelError: unknown ref or stage, corrupted or unsafe package.
        """
        model = self.get(ref)
        stage = stage or model.info.best_stage_name
        if stage not in model.info.stages:
            raise ModelError(
                f"stage {stage!r} not in package {model.hash[:12]} (stages: {_natural(model.info.stages)})"
            )
        dest = Path(dest_models_dir)
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(model.path, mode="r:gz") as tar:
            for m in tar.getmembers():
                name = _safe_member(m, str(model.path))
                if not m.isfile():
                    continue
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                f = tar.extractfile(m)
                assert f is not None
                with open(target, "wb") as out:
                    shutil.copyfileobj(f, out, 1 << 20)
        files = [f"{stage}/{f}" for f in model.info.stages[stage].files]
        return {
            "hash": model.hash,
            "class_names": model.class_names,
            "stage_name": stage,
            "files": files,
            "info": model.info,
        }

    def import_package(self, package_path: str | Path, limits: ImportLimits = ImportLimits()) -> StoredModel:
        """Validate a package from elsewhere (upgrading 1.1.0), repack it reproducibly, store it.

        Every header is checked (:func:`scan_package`) before any member is extracted; then the
        members are streamed to a temp folder and repacked.

        Raises:
            ModelError: not a tar.gz, unsafe or conflicting member, a limit of ``limits``
                exceeded, missing required key (named), a stage or file named in ymir-info.yaml
                but absent from the archive.
        """
        where = str(package_path)
        raw, members = scan_package(package_path, limits)
        renames: dict[str, str] = {}
        if isinstance(raw, dict):
            raw, renames = upgrade_info(raw, f"{where}:{INFO_NAME}")
        info = validate_info(raw, f"{where}:{INFO_NAME}")
        for name in info.stages:
            if len(name.encode("utf-8")) > MAX_STAGE_NAME_BYTES:
                raise ModelError(
                    f"stage name {name[:40]!r}... is {len(name.encode('utf-8'))} bytes of UTF-8; "
                    f"at most {MAX_STAGE_NAME_BYTES}",
                    path=f"{where}:{INFO_NAME}",
                    key="stages",
                )
        names = {renames.get(n, n): n for n in members}
        _check_stage_members(info, {k: members[v] for k, v in names.items()}, where)
        wanted = {old: new for new, old in names.items() if old != INFO_NAME}
        with tempfile.TemporaryDirectory() as tmp:
            out: list[Member] = []
            try:
                with tarfile.open(package_path, mode="r|gz") as tar:
                    for m in tar:
                        if m.name not in wanted or not m.isfile():
                            continue
                        f = tar.extractfile(m)
                        assert f is not None
                        local = Path(tmp) / f"m{len(out)}"
                        with open(local, "wb") as o:
                            shutil.copyfileobj(f, o, 1 << 20)
                        out.append((wanted.pop(m.name), str(local)))
            except (tarfile.TarError, zlib.error, EOFError) as e:
                raise ModelError(f"not a tar.gz model package: {e}", path=where) from None
            digest = self.pack(out, to_builtin(info.model_dump(exclude_none=True)))
        return self.get(digest)


def _check_stage_members(info: ModelPackageInfo, members: dict[str, Any], where: str) -> None:
    for name, st in info.stages.items():
        for f in st.files:
            if f"{name}/{f}" not in members:
                raise ModelError(
                    f"stage {name!r} names {f!r} but the archive has no member {name}/{f}",
                    path=where,
                    key=f"stages.{name}.files",
                )


def stage_entries(stages: dict[str, ModelStage]) -> dict[str, Any]:
    """Stages as plain dicts for ymir-info.yaml (``tp/fp/fn`` kept; None dropped)."""
    return {k: s.model_dump(exclude_none=True) for k, s in stages.items()}


__all__ = [
    "ModelStore",
    "StoredModel",
    "ImportLimits",
    "build_info",
    "read_package",
    "scan_package",
    "write_reproducible_targz",
    "default_model_location",
    "best_stage",
    "stage_entries",
]
