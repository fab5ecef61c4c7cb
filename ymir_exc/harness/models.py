"""Model packages: reproducible packing, a local store, safe import and unpacking.

A package is a ``.tar.gz`` with ``<stage>/<file>`` members, optional
``attachments/<section>/<file>`` and ``ymir-info.yaml`` (CONTRACT.md section 4), stored as
``<model-location>/<sha1 of its bytes>``.

Better than the platform, on purpose: packing is reproducible (members sorted, mtimes, owners
and modes fixed, gzip mtime 0, no file name in the gzip header), so the same outputs give the same
hash; import refuses absolute, ``..``, symlink, hard-link and device members and any stage file
named but absent; a stored package's bytes are checked against its name before use.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml
from pydantic import ValidationError

from ymir_exc.errors import ModelError
from ymir_exc.formats import ModelPackageInfo, ModelStage, best_stage, primary_metric_key, to_builtin

INFO_NAME = "ymir-info.yaml"
PACKAGE_VERSION = "2.0.0"
LEGACY_STAGE_NAME = "default_best_stage"


def default_model_location() -> Path:
    """``$YMIR_EXC_MODEL_LOCATION``, else ``~/.ymir-exc/models``."""
    env = os.environ.get("YMIR_EXC_MODEL_LOCATION")
    return Path(env) if env else Path.home() / ".ymir-exc" / "models"


Member = Tuple[str, Union[str, bytes]]  # (arcname, source path or content)


def write_reproducible_targz(members: Sequence[Member], dest: Union[str, Path]) -> str:
    """Write a tar.gz whose bytes depend only on the members' names and contents.

    Returns:
        the hex sha1 of the written file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    names = [m[0] for m in members]
    if len(set(names)) != len(names):
        raise ModelError(f"duplicate package members: {sorted({n for n in names if names.count(n) > 1})}")
    h = hashlib.sha1()

    class _Hashing(io.RawIOBase):
        def __init__(self, f):
            self.f = f

        def writable(self):
            return True

        def write(self, b):
            h.update(b)
            return self.f.write(b)

    with open(dest, "wb") as raw:
        sink = _Hashing(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=6) as gz:  # type: ignore[arg-type]
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for arcname, src in sorted(members, key=lambda m: m[0]):
                    ti = tarfile.TarInfo(arcname)
                    ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0o644, 0, 0, "", ""
                    if isinstance(src, bytes):
                        ti.size = len(src)
                        tar.addfile(ti, io.BytesIO(src))
                    else:
                        ti.size = os.path.getsize(src)
                        with open(src, "rb") as f:
                            tar.addfile(ti, f)
    return h.hexdigest()


def info_yaml(info: Dict[str, Any]) -> bytes:
    return yaml.safe_dump(to_builtin(info), sort_keys=True, allow_unicode=True).encode("utf-8")


def build_info(executor_config: Dict[str, Any], task_context: Dict[str, Any], stages: Dict[str, Any],
               best_stage_name: str) -> Dict[str, Any]:
    """ymir-info.yaml content (package_version 2.0.0), validated.

    Raises:
        ModelError: it breaks :class:`~ymir_exc.formats.ModelPackageInfo` (names the key).
    """
    info = {"executor_config": executor_config, "task_context": task_context, "stages": stages,
            "best_stage_name": best_stage_name, "package_version": PACKAGE_VERSION}
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


def upgrade_info(info: Dict[str, Any], where: str) -> Tuple[Dict[str, Any], Dict[str, str]]:
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
    stage = {"stage_name": LEGACY_STAGE_NAME, "files": [os.path.basename(f) for f in files],
             "timestamp": int(ctx.get("timestamp", 0) or 0), "mAP": float(m or 0.0)}
    new = {k: v for k, v in info.items() if k != "models"}
    new.update({"stages": {LEGACY_STAGE_NAME: stage}, "best_stage_name": LEGACY_STAGE_NAME,
                "package_version": PACKAGE_VERSION, "task_context": ctx})
    return new, {f: f"{LEGACY_STAGE_NAME}/{os.path.basename(f)}" for f in files}


def _safe_member(m: tarfile.TarInfo, where: str) -> str:
    name = m.name
    p = PurePosixPath(name)
    if name.startswith("/") or p.is_absolute():
        raise ModelError(f"absolute member path refused: {name}", path=where)
    if ".." in p.parts:
        raise ModelError(f"member path with '..' refused: {name}", path=where)
    if m.issym() or m.islnk():
        raise ModelError(f"{'symlink' if m.issym() else 'hard link'} member refused: {name} -> {m.linkname}", path=where)
    if not (m.isfile() or m.isdir()):
        raise ModelError(f"special member refused (device, fifo, ...): {name}", path=where)
    return str(p)


def read_package(path: Union[str, Path]) -> Tuple[Dict[str, Any], Dict[str, tarfile.TarInfo]]:
    """Open a package, check every member, and return (raw ymir-info dict, {name: TarInfo}).

    Raises:
        ModelError: not a tar.gz, an unsafe member, no or invalid ymir-info.yaml.
    """
    where = str(path)
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            members = {}
            for m in tar.getmembers():
                name = _safe_member(m, where)
                if m.isfile():
                    members[name] = m
            if INFO_NAME not in members:
                raise ModelError(f"no {INFO_NAME} in the package", path=where)
            f = tar.extractfile(members[INFO_NAME])
            assert f is not None
            try:
                info = yaml.safe_load(f.read().decode("utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError) as e:
                raise ModelError(f"{INFO_NAME} is not valid YAML: {e}", path=where) from None
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise ModelError("package not found", path=where) from None
        raise ModelError(f"not a tar.gz model package: {e}", path=where) from None
    return info, members


@dataclass
class StoredModel:
    """A package in the store."""

    hash: str
    path: Path
    info: ModelPackageInfo

    @property
    def class_names(self) -> List[str]:
        return list(self.info.executor_config["class_names"])

    def mAP(self) -> float:
        """The best stage's primary metric (maskAP > mIoU > mAP; see :meth:`primary_metric`)."""
        return self.primary_metric()[1]

    def primary_metric(self) -> Tuple[str, float]:
        """``(key, value)`` of the best stage's primary metric, e.g. ``("mIoU", 0.71)``."""
        best = self.info.stages[self.info.best_stage_name].evaluation_result()
        key = primary_metric_key(best)
        return (key, float(best[key])) if key else ("mAP", 0.0)


class ModelStore:
    """Packages stored as ``<location>/<sha1>``."""

    def __init__(self, location: Union[str, Path, None] = None) -> None:
        self.location = Path(location) if location else default_model_location()

    def _finish(self, tmp: Path, digest: str) -> str:
        final = self.location / digest
        os.replace(tmp, final)
        return digest

    def pack(self, members: Sequence[Member], info: Dict[str, Any]) -> str:
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
        match = [p for p in stored if p.name == ref] or (
            [p for p in stored if p.name.startswith(ref)] if len(ref) >= 6 else [])
        if len(match) != 1:
            raise ModelError(f"model {ref!r} {'is ambiguous' if match else 'not found'} in {self.location}")
        return match[0]

    def get(self, ref: str, verify: bool = True) -> StoredModel:
        """Load a stored package's info; with ``verify`` its bytes must hash to its name.

        Raises:
            ModelError: unknown ref, a hash mismatch (corrupted store), or an invalid package.
        """
        path = self.resolve(ref)
        if verify:
            from ymir_exc.harness.workspace import sha1_file

            actual = sha1_file(str(path))
            if actual != path.name:
                raise ModelError(f"stored package is corrupted: its sha1 is {actual}", path=str(path))
        raw, members = read_package(path)
        info = validate_info(raw, f"{path}:{INFO_NAME}")
        _check_stage_members(info, members, str(path))
        return StoredModel(path.name, path, info)

    def list(self) -> List[StoredModel]:
        """Every valid stored package, newest first (invalid ones are skipped)."""
        if not self.location.is_dir():
            return []
        out = []
        for p in sorted(self.location.iterdir(), key=lambda p: -p.stat().st_mtime_ns):
            if p.is_file() and not p.name.startswith("."):
                try:
                    out.append(self.get(p.name, verify=False))
                except ModelError:
                    continue
        return out

    def unpack(self, ref: str, dest_models_dir: Union[str, Path], stage: Optional[str] = None) -> Dict[str, Any]:
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
            raise ModelError(f"stage {stage!r} not in package {model.hash[:12]} (stages: {sorted(model.info.stages)})")
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
        return {"hash": model.hash, "class_names": model.class_names, "stage_name": stage, "files": files,
                "info": model.info}

    def import_package(self, package_path: Union[str, Path]) -> StoredModel:
        """Validate a package from elsewhere (upgrading 1.1.0), repack it reproducibly, store it.

        Raises:
            ModelError: not a tar.gz, unsafe member, missing required key (named), a stage or file
                named in ymir-info.yaml but absent from the archive.
        """
        where = str(package_path)
        raw, members = read_package(package_path)
        renames: Dict[str, str] = {}
        if isinstance(raw, dict):
            raw, renames = upgrade_info(raw, f"{where}:{INFO_NAME}")
        info = validate_info(raw, f"{where}:{INFO_NAME}")
        names = {renames.get(n, n): n for n in members}
        _check_stage_members(info, {k: members[v] for k, v in names.items()}, where)
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(package_path, mode="r:gz") as tar:
            out: List[Member] = []
            for new, old in sorted(names.items()):
                if old == INFO_NAME:
                    continue
                f = tar.extractfile(members[old])
                assert f is not None
                local = Path(tmp) / f"m{len(out)}"
                with open(local, "wb") as o:
                    shutil.copyfileobj(f, o, 1 << 20)
                out.append((new, str(local)))
            digest = self.pack(out, to_builtin(info.model_dump(exclude_none=True)))
        return self.get(digest)


def _check_stage_members(info: ModelPackageInfo, members: Dict[str, Any], where: str) -> None:
    for name, st in info.stages.items():
        for f in st.files:
            if f"{name}/{f}" not in members:
                raise ModelError(f"stage {name!r} names {f!r} but the archive has no member {name}/{f}",
                                 path=where, key=f"stages.{name}.files")


def stage_entries(stages: Dict[str, ModelStage]) -> Dict[str, Any]:
    """Stages as plain dicts for ymir-info.yaml (``tp/fp/fn`` kept; None dropped)."""
    return {k: s.model_dump(exclude_none=True) for k, s in stages.items()}


__all__ = ["ModelStore", "StoredModel", "build_info", "read_package", "write_reproducible_targz",
           "default_model_location", "best_stage", "stage_entries"]
