"""Prepare a task's work dir ``W``: ``W/in`` (assets, annotations, index files, env.yaml,
config.yaml, models) and an empty ``W/out``, as the platform does
(docs/contract.md#what-the-platform-hands-an-executor).

Differences from the platform, on purpose: assets are reflinked (a copy-on-write clone) where
the file system supports it, else hard-linked (copied across file systems), instead of copied;
annotations of the same image bytes are written once; nothing is downloaded.

A hard-linked asset is the user's own file: an executor run locally (no read-only ``/in``) that
writes into it changes the dataset. :func:`snapshot_links` records each linked asset's size,
mtime and inode change time after ``prepare``; :func:`changed_links` lists those whose size or
mtime changed, or whose ctime changed and whose bytes no longer match the sha1 they are named by,
and the pipeline fails the run with that list. ``assets="copy"`` or ``"reflink"`` avoids the
risk entirely.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ymir_exc.formats.annotations import CocoWriter, annotation_format
from ymir_exc.formats.annotations import ark_text as ark_text  # re-exported: importable from here as before
from ymir_exc.formats.annotations import voc_xml as voc_xml
from ymir_exc.formats.env import DEFAULT_PROTOCOL_VERSION, TASKS, EnvConfig
from ymir_exc.harness.asset_index import AssetIndex
from ymir_exc.harness.datasets import Dataset, Item, item_digests, load_sample
from ymir_exc.harness.files import ASSET_MODES as ASSET_MODES
from ymir_exc.harness.files import _in_chunks, _io_workers, _write_new
from ymir_exc.harness.files import image_size as image_size
from ymir_exc.harness.files import place_file as place_file
from ymir_exc.harness.files import sha1_file as sha1_file

#: keys the platform sets in config.yaml; they beat the template (docs/contract.md#configyaml-and-the-reserved-keys)
RESERVED_KEYS = ("class_names", "gpu_id", "gpu_count", "task_id", "pretrained_model_params", "model_params_path")


@dataclass
class InDirStats:
    """What :func:`write_in_dir` did."""

    assets: int = 0
    duplicates: int = 0
    methods: dict[str, int] = field(default_factory=dict)
    index_files: dict[str, str] = field(default_factory=dict)
    #: asset file name (``<sha1>.<ext>``) -> the source image it came from (read from disk on
    #: demand: :class:`~ymir_exc.harness.asset_index.AssetIndex`)
    sources: Mapping[str, str] = field(default_factory=dict)
    #: (source image, asset path) of every asset placed as a hard link (shares the user's file)
    linked: Sequence[tuple[str, str]] = field(default_factory=list)


def snapshot_links(linked: Sequence[tuple[str, str]]) -> dict[str, tuple[int, int, int, str]]:
    """``{source image: (size, mtime_ns, ctime_ns, sha1)}`` of hard-linked assets, the sha1 read
    from the asset's name (``<sha1>.<ext>``). Take it right after :func:`prepare`: making the
    links changed their ctime."""
    out = {}
    for src, asset in linked:
        try:
            st = os.stat(src)
        except OSError:
            continue
        out[src] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, os.path.basename(asset).split(".", 1)[0])
    return out


def changed_links(snapshot: dict[str, tuple[int, int, int, str]]) -> list[str]:
    """The source images of :func:`snapshot_links` that an executor changed through the hard
    links (or that are gone).

    Size or mtime differing means changed. A changed inode change time alone is not proof: any
    other process that adds or removes a hard link to the same file (another run preparing the
    same dataset, a clean-up of an old work dir) changes it too. So such a file is hashed again
    and compared with the sha1 its asset is named by: only different bytes count as a change
    (this also catches an executor that restored the mtime after writing)."""
    changed = []
    for src, (size, mtime, ctime, sha1) in snapshot.items():
        try:
            st = os.stat(src)
        except OSError:
            changed.append(src)
            continue
        if (st.st_size, st.st_mtime_ns) != (size, mtime):
            changed.append(src)
        elif st.st_ctime_ns != ctime:
            try:
                if sha1_file(src) != sha1:
                    changed.append(src)
            except OSError:
                changed.append(src)
    return changed


#: items planned and placed together: enough to keep the thread pool busy, few enough that the
#: chunk's plan (paths, jobs) stays a few MB at any dataset size
CHUNK = 4096


@dataclass(frozen=True)
class _Target:
    """Where one write_in_dir writes: ``in_dir`` on this machine, ``prefix`` in index lines,
    the annotation format, how assets get there."""

    in_str: str
    prefix: str
    fmt: str
    mode: str


@dataclass
class _ChunkPlan:
    """The files one chunk of items needs: links to make, annotations to write, index lines."""

    links: list[tuple[str, str]] = field(default_factory=list)  # (source image, asset path)
    notes: list[tuple[str, str, Item]] = field(default_factory=list)  # (annotation path, asset name, item)
    folders: set[str] = field(default_factory=set)
    lines: list[str] = field(default_factory=list)


def write_in_dir(
    ds: Dataset,
    in_dir: Path,
    *,
    export_format: str = "det-voc:raw",
    path_prefix: str | None = None,
    mode: str = "link",
    splits: Sequence[str] = ("train", "val", "candidate"),
) -> InDirStats:
    """Write assets, annotations and index files of ``ds`` under ``in_dir``.

    Streams: items are hashed, planned and placed :data:`CHUNK` at a time, index lines go
    straight to their files, and what was already placed is kept on disk (:class:`AssetIndex`),
    so memory does not grow with the number of images (COCO excepted: its one json is built in
    memory). The same image bytes become one asset and one annotation file (the first item's
    boxes); a split lists them once.

    Args:
        export_format: ``det-ark:raw`` / ``ark:raw``, ``det-voc:raw`` / ``voc:raw`` or ``seg-coco:raw``.
        path_prefix: what index lines start with instead of ``in_dir`` (``/in`` for a container).
        mode: how assets get there: ``auto`` (reflink, else hard link, else copy), ``link`` (hard
            link, else copy), ``reflink`` (clone, else copy), ``symlink`` or ``copy``.
        splits: which index files to write (``train`` and ``val`` with annotations).

    Raises:
        ConfigFileError: an unknown export_format.
        OSError: an image that cannot be read, a file that cannot be written.
    """
    fmt = annotation_format(export_format)
    in_dir = Path(in_dir)
    in_dir.mkdir(parents=True, exist_ok=True)
    target = _Target(str(in_dir), (path_prefix or str(in_dir)).rstrip("/"), fmt, mode)
    index = AssetIndex()
    stats = InDirStats(sources=index.sources, linked=index.linked)
    coco = CocoWriter(ds.class_names) if fmt == "coco" else None
    made: set[str] = set()  # folders made (at most 2 x 256)
    with ThreadPoolExecutor(max_workers=_io_workers(CHUNK)) as pool:
        for split in splits:
            path = in_dir / f"{split}-index.tsv"
            with open(path, "w", encoding="utf-8") as out:
                items = ds.split(split)
                for start in range(0, len(items), CHUNK):
                    chunk = items[start : start + CHUNK]
                    plan = _plan_chunk(split, chunk, item_digests(pool, chunk), target, index, stats, coco)
                    _place_chunk(pool, plan, target, index, stats, made)
                    out.write("".join(plan.lines))
            stats.index_files[split] = str(path)
    if coco is not None and coco.images:
        (in_dir / COCO_REL).parent.mkdir(parents=True, exist_ok=True)
        (in_dir / COCO_REL).write_text(coco.to_json(), encoding="utf-8")
    return stats


#: the one annotation file of ``seg-coco:raw``, below ``in/``
COCO_REL = "annotations/coco-annotations.json"


def _plan_chunk(
    split: str,
    chunk: Sequence[Item],
    sha: dict[str, str],
    target: _Target,
    index: AssetIndex,
    stats: InDirStats,
    coco: CocoWriter | None,
) -> _ChunkPlan:
    """What ``chunk`` of ``split`` needs, in dataset order: new assets to place, new annotation
    files, and its index lines (a repeat of the same bytes in a split is counted, not listed)."""
    plan = _ChunkPlan()
    in_str, prefix = target.in_str, target.prefix
    for item in chunk:
        src = item.image_path
        h = sha[src]
        name = h + (os.path.splitext(src)[1].lower() or ".jpg")
        rel = f"assets/{h[-2:]}/{name}"
        if index.add_asset(name, src, f"{in_str}/{rel}"):
            plan.folders.add(f"{in_str}/assets/{h[-2:]}")
            plan.links.append((src, f"{in_str}/{rel}"))
        if not index.add_line(split, h):
            stats.duplicates += 1
            continue
        if split == "candidate":
            plan.lines.append(f"{prefix}/{rel}\n")
            continue
        if coco is not None:
            if index.add_note(h):
                coco.add_image(name, image_size(src), item.boxes)
            anno_rel = COCO_REL
        else:
            anno_rel = f"annotations/{h[-2:]}/{h}.{'xml' if target.fmt == 'voc' else 'txt'}"
            if index.add_note(h):
                plan.folders.add(f"{in_str}/annotations/{h[-2:]}")
                plan.notes.append((f"{in_str}/{anno_rel}", name, item))
        plan.lines.append(f"{prefix}/{rel}\t{prefix}/{anno_rel}\n")
    return plan


def _place_chunk(
    pool: ThreadPoolExecutor, plan: _ChunkPlan, target: _Target, index: AssetIndex, stats: InDirStats, made: set[str]
) -> None:
    """Make ``plan``'s folders (each once), then its links and annotation files in parallel
    (both mostly inode work in the kernel); count the methods and flag the hard links."""
    for d in sorted(plan.folders - made):
        os.makedirs(d, exist_ok=True)
        made.add(d)

    def place(job: tuple[str, str]) -> str:
        return place_file(job[0], job[1], target.mode, make_parent=False)

    def annotate(job: tuple[str, str, Item]) -> None:
        path, name, item = job
        boxes = item.boxes
        _write_new(path, voc_xml(name, image_size(item.image_path), boxes) if target.fmt == "voc" else ark_text(boxes))

    placed = _in_chunks(pool, place, plan.links, wait=False)
    annotated = _in_chunks(pool, annotate, plan.notes, wait=False)
    linked = []
    for (_, asset), m in zip(plan.links, placed(), strict=True):
        if m != "exists":
            stats.methods[m] = stats.methods.get(m, 0) + 1
            stats.assets += 1
        if m == "link":
            linked.append(os.path.basename(asset))
    index.mark_linked(linked)
    annotated()


def make_task_id(tasks: Sequence[str]) -> str:
    """A task id like the platform's: ``t`` + time + the tasks' initials."""
    return "t" + time.strftime("%Y%m%d%H%M%S") + f"{int(time.time() * 1000) % 1000:03d}" + "".join(t[0] for t in tasks)


def env_yaml(
    tasks: Sequence[str],
    task_id: str,
    protocol_version: str,
    in_root: str,
    out_root: str,
    manifest_file: str = "/img-man/manifest.yaml",
) -> dict[str, Any]:
    """env.yaml content for ``tasks`` with paths under ``in_root`` / ``out_root``
    (docs/contract.md#envyaml): :meth:`EnvConfig.for_task` as a mapping ready to dump.

    Below protocol 1.0.0 the ``protocol_version`` key is left out, as old platforms did.

    Raises:
        ValueError: an unknown task or protocol_version.
    """
    cfg = EnvConfig.for_task(
        in_root, out_root, tasks, task_id=task_id, protocol_version=protocol_version, manifest_file=manifest_file
    )
    return cfg.to_yaml_dict()


def renumber_gpu_ids(gpu_id: str) -> tuple[str, int]:
    """``"3,5"`` -> ``("0,1", 2)``: inside the container the GPUs given are numbered 0..n-1."""
    ids = [g.strip() for g in str(gpu_id or "").split(",") if g.strip()]
    return ",".join(str(i) for i in range(len(ids))), len(ids)


@dataclass
class PreparedTask:
    """What :func:`prepare` produced."""

    work_dir: Path
    in_dir: Path
    out_dir: Path
    tasks: list[str]
    task_id: str
    config: dict[str, Any]
    env: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    stats: InDirStats | None = None

    @property
    def env_file(self) -> Path:
        return self.in_dir / "env.yaml"

    @property
    def config_file(self) -> Path:
        return self.in_dir / "config.yaml"


def merged_template(templates: dict[str, dict[str, Any]], tasks: Sequence[str]) -> dict[str, Any]:
    """The hyper-parameters for ``tasks``: the training template; for mining + infer, the mining
    template with the infer template's extra keys (mining wins on a shared key)."""
    ordered = [t for t in TASKS if t in tasks]
    out: dict[str, Any] = dict(templates.get(ordered[0]) or {}) if ordered else {}
    for t in ordered[1:]:
        for k, v in (templates.get(t) or {}).items():
            out.setdefault(k, v)
    return out


@dataclass(frozen=True)
class PrepareOptions:
    """How :func:`prepare` lays out ``in/`` (the run's knobs, the same for every task of a run).

    Attributes:
        protocol_version: the env.yaml protocol (below 1.0.0 the key is left out).
        container: paths in env.yaml / index files / config are ``/in``, ``/out`` (else absolute
            work-dir paths), and ``out/`` is world-writable (the container may run as another user).
        gpu_id: host GPU ids, e.g. ``"3,5"`` (renumbered to ``"0,1"`` in config.yaml).
        manifest_file: the image's manifest path written into env.yaml.
        assets: ``auto``, ``link``, ``copy`` or ``reflink`` (see :func:`place_file`).
    """

    protocol_version: str = DEFAULT_PROTOCOL_VERSION
    container: bool = False
    gpu_id: str = ""
    manifest_file: str = "/img-man/manifest.yaml"
    assets: str = "auto"


def prepare(
    work_dir: Path,
    ds: Dataset,
    tasks: Sequence[str],
    templates: dict[str, dict[str, Any]],
    options: PrepareOptions = PrepareOptions(),
    *,
    user_config: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    task_id: str | None = None,
) -> PreparedTask:
    """Build ``work_dir/in`` and ``work_dir/out`` for ``tasks``.

    Args:
        ds: the dataset.
        tasks: ``["training"]``, ``["mining"]``, ``["infer"]`` or ``["mining", "infer"]``.
        templates: the image's ``{task: template dict}``.
        options: container or local paths, GPU ids, protocol, how assets are placed (:class:`PrepareOptions`).
        user_config: keys the user changed (``--config``); reserved keys in it are ignored with a warning.
        model: from :meth:`ModelStore.unpack`: ``{"class_names", "stage_name", "files"}`` (files relative
            to ``models/``), for ``pretrained_model_params`` / ``model_params_path``.
        task_id: the platform's task id (default: a new one from :func:`make_task_id`).

    Raises:
        FileExistsError: ``work_dir/out`` exists and is not empty (results would mix).
        ConfigFileError: an unknown export_format.
        ValueError: tasks not one of the accepted combinations, or mining / infer without a model.
    """
    tasks = _checked_tasks(tasks, model)
    work_dir = Path(work_dir).resolve()
    in_dir, out_dir = work_dir / "in", work_dir / "out"
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty: choose a new --work-dir")
    in_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(
        out_dir, 0o777 if options.container else 0o755
    )  # a container may run as another --user (rootless: a mapped uid)
    task_id = task_id or make_task_id(tasks)
    in_root = "/in" if options.container else str(in_dir)
    out_root = "/out" if options.container else str(out_dir)
    warnings: list[str] = []
    config = _task_config(ds, tasks, templates, user_config, model, warnings)
    renum, count = renumber_gpu_ids(options.gpu_id)
    config.update({"gpu_id": renum, "gpu_count": count, "task_id": task_id})
    if model is not None:
        key = "pretrained_model_params" if tasks == ["training"] else "model_params_path"
        config[key] = [f"{in_root}/models/{f}" for f in model["files"]]
    stats = write_in_dir(
        ds,
        in_dir,
        export_format=str(config.get("export_format") or "det-voc:raw"),
        path_prefix=in_root,
        mode=options.assets,
        splits=_task_splits(ds, tasks),
    )
    env = env_yaml(tasks, task_id, options.protocol_version, in_root, out_root, options.manifest_file)
    _write_task_files(in_dir, env, config)
    return PreparedTask(work_dir, in_dir, out_dir, tasks, task_id, config, env, warnings, stats)


def _write_task_files(in_dir: Path, env: dict[str, Any], config: dict[str, Any]) -> None:
    """env.yaml, config.yaml and the index files no task of this run reads (empty) in ``in_dir``."""
    for split in ("train", "val", "candidate"):
        (in_dir / f"{split}-index.tsv").touch()
    (in_dir / "env.yaml").write_text(yaml.safe_dump(env, sort_keys=False), encoding="utf-8")
    (in_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _checked_tasks(tasks: Sequence[str], model: dict[str, Any] | None) -> list[str]:
    """``tasks`` in the platform's order.

    Raises:
        ValueError: not training, mining, infer or mining + infer; mining / infer without a model.
    """
    ordered = [t for t in TASKS if t in tasks]
    if ordered not in (["training"], ["mining"], ["infer"], ["mining", "infer"]):
        raise ValueError(f"tasks must be training, mining, infer or mining + infer; got {ordered}")
    if ordered != ["training"] and model is None:
        raise ValueError("mining and inference need a model: pass --model HASH[@STAGE] (or 'latest')")
    return ordered


def _task_config(
    ds: Dataset,
    tasks: list[str],
    templates: dict[str, dict[str, Any]],
    user_config: dict[str, Any] | None,
    model: dict[str, Any] | None,
    warnings: list[str],
) -> dict[str, Any]:
    """config.yaml before the platform's per-run keys: the merged template, less reserved keys,
    with the user's keys and ``class_names`` (the model's for mining / infer); what was ignored
    or looks wrong is appended to ``warnings``."""
    config = merged_template(templates, tasks)
    for k in RESERVED_KEYS:
        if k in config:
            warnings.append(f"the image's template sets the reserved key {k!r}; the platform's value wins")
            config.pop(k)
    for k, v in (user_config or {}).items():
        if k in RESERVED_KEYS:
            warnings.append(f"--config sets the reserved key {k!r}; ignored (the platform sets it)")
            continue
        config[k] = v
    class_names = list(model["class_names"]) if (model and tasks != ["training"]) else list(ds.class_names)
    config["class_names"] = class_names
    if tasks != ["training"] and ds.class_names and model is not None:
        unknown = [n for n in ds.class_names if n not in class_names]
        if unknown:
            warnings.append(f"the dataset's classes {unknown} are not in the model's class_names {class_names}")
    return config


def _task_splits(ds: Dataset, tasks: list[str]) -> tuple[str, ...]:
    """The index files ``tasks`` get: train + val for training, else candidate.

    Raises:
        ValueError: the dataset has no image for them.
    """
    if tasks == ["training"]:
        if not ds.train:
            raise ValueError(f"dataset {ds.name} has no training images")
        return ("train", "val")
    if not ds.candidate:
        raise ValueError(f"dataset {ds.name} has no candidate images")
    return ("candidate",)


def write_sample(name: str, out_dir: str) -> Path:
    """Write sample ``name`` to ``out_dir`` in the documents' voc_dog layout.

    ``out_dir/in/assets/<h[-2:]>/<h>.jpg``, ``in/annotations/<h[-2:]>/<h>.xml`` (VOC),
    ``in/{train,val}-index.tsv`` (``/in/...`` paths), ``in/candidate-index.tsv``, ``in/env.yaml``
    and ``in/config.yaml`` for a training task, and an empty ``out/``: mountable as ``/in`` and
    ``/out`` as it is, and readable by ``--dataset out_dir``.

    Returns:
        the folder written.
    """
    ds = load_sample(name)
    root = Path(out_dir).resolve()
    write_in_dir(ds, root / "in", export_format="det-voc:raw", path_prefix="/in", mode="copy")
    (root / "out").mkdir(parents=True, exist_ok=True)
    env = EnvConfig.for_task("/in", "/out", ["training"], task_id=f"sample-{name}").to_yaml_dict()
    (root / "in" / "env.yaml").write_text(yaml.safe_dump(env, sort_keys=False), encoding="utf-8")
    cfg = {
        "class_names": ds.class_names,
        "gpu_id": "",
        "gpu_count": 0,
        "task_id": f"sample-{name}",
        "export_format": "det-voc:raw",
    }
    (root / "in" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return root
