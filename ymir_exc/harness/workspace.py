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

import hashlib
import os
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ymir_exc.dataset_reader import BBox, annotation_format
from ymir_exc.harness.datasets import Dataset, Item
from ymir_exc.settings import PROTOCOL_VERSION, TASKS

#: keys the platform sets in config.yaml; they beat the template (docs/contract.md#configyaml-and-the-reserved-keys)
RESERVED_KEYS = ("class_names", "gpu_id", "gpu_count", "task_id", "pretrained_model_params", "model_params_path")


def sha1_file(path: str, bufsize: int = 1 << 20) -> str:
    """Hex sha1 of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size <= bufsize:  # most images: one read
            h.update(f.read())
            return h.hexdigest()
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


#: ``--assets``: how assets get into ``in/assets``; ``auto`` = reflink, else hard link, else copy
ASSET_MODES = ("auto", "link", "copy", "reflink")
_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


def _reflink(src: str, dst: str) -> bool:
    """Clone ``src`` to a new ``dst`` (copy-on-write, ``ioctl(FICLONE)``); False where the file
    system (or the platform) cannot, leaving no ``dst`` behind.

    Raises:
        FileExistsError: ``dst`` exists.
    """
    import fcntl
    import sys

    if not sys.platform.startswith("linux"):
        return False
    fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    ok = False
    try:
        with open(src, "rb") as f:
            fcntl.ioctl(fd_out, _FICLONE, f.fileno())
        ok = True
    except OSError:
        pass
    finally:
        os.close(fd_out)
        if not ok:
            os.unlink(dst)
    return ok


def place_file(src: str, dst: str, mode: str = "link", make_parent: bool = True) -> str:
    """Put ``src`` at ``dst``: ``link`` = hard link, falling back to a copy (another file system,
    no permission); ``reflink`` = a copy-on-write clone, falling back to a copy; ``auto`` = a
    clone, else a hard link, else a copy; ``symlink``; ``copy``. Returns the method used
    (``reflink``, ``link``, ``symlink``, ``copy``), or ``exists`` when ``dst`` is already there
    (assets are named by their sha1: same name, same bytes)."""
    if make_parent:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        if mode in ("reflink", "auto"):
            if _reflink(src, dst):
                return "reflink"
            if mode == "auto":
                mode = "link"
        if mode == "link":
            os.link(src, dst)
            return "link"
        if mode == "symlink":
            os.symlink(os.path.abspath(src), dst)
            return "symlink"
    except FileExistsError:
        return "exists"
    except OSError:
        if mode not in ("link", "reflink"):
            raise
        # a hard link across file systems or without permission: copy below
    if os.path.lexists(dst):
        return "exists"
    shutil.copyfile(src, dst)
    return "copy"


def image_size(path: str) -> tuple[int, int]:
    """``(width, height)`` in pixels, read from the image header (Pillow)."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        return int(w), int(h)


def voc_xml(filename: str, size: tuple[int, int], boxes: Sequence[BBox]) -> str:
    """A Pascal VOC annotation; ``bndbox`` is inclusive (xmax = x + w - 1), as YMIR writes it."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    s = ET.SubElement(root, "size")
    ET.SubElement(s, "width").text = str(size[0])
    ET.SubElement(s, "height").text = str(size[1])
    ET.SubElement(s, "depth").text = "3"
    for b in boxes:
        o = ET.SubElement(root, "object")
        ET.SubElement(o, "name").text = b.class_name
        ET.SubElement(o, "difficult").text = "0"
        bb = ET.SubElement(o, "bndbox")
        for tag, v in (("xmin", b.x), ("ymin", b.y), ("xmax", b.x + b.w - 1), ("ymax", b.y + b.h - 1)):
            ET.SubElement(bb, tag).text = str(v)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def ark_text(boxes: Sequence[BBox]) -> str:
    """ark lines ``class_idx, xmin, ymin, xmax, ymax`` (inclusive corners)."""
    return "".join(f"{b.class_id}, {b.x}, {b.y}, {b.x + b.w - 1}, {b.y + b.h - 1}\n" for b in boxes)


@dataclass
class InDirStats:
    """What :func:`write_in_dir` did."""

    assets: int = 0
    duplicates: int = 0
    methods: dict[str, int] = field(default_factory=dict)
    index_files: dict[str, str] = field(default_factory=dict)
    #: asset file name (``<sha1>.<ext>``) -> the source image it came from
    sources: dict[str, str] = field(default_factory=dict)
    #: (source image, asset path) of every asset placed as a hard link (shares the user's file)
    linked: list[tuple[str, str]] = field(default_factory=list)


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

    Args:
        export_format: ``det-ark:raw`` / ``ark:raw``, ``det-voc:raw`` / ``voc:raw`` or ``seg-coco:raw``.
        path_prefix: what index lines start with instead of ``in_dir`` (``/in`` for a container).
        mode: how assets get there: ``auto`` (reflink, else hard link, else copy), ``link`` (hard
            link, else copy), ``reflink`` (clone, else copy), ``symlink`` or ``copy``.
        splits: which index files to write (``train`` and ``val`` with annotations).

    Raises:
        ConfigFileError: an unknown export_format.
    """
    fmt = annotation_format(export_format)
    in_dir = Path(in_dir)
    in_str = str(in_dir)
    prefix = (path_prefix or in_str).rstrip("/")
    stats = InDirStats()
    coco: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(ds.class_names)],
    }
    coco_ids: dict[str, int] = {}
    coco_rel = "annotations/coco-annotations.json"
    by_split = {split: list(ds.split(split)) for split in splits}
    sources = list(dict.fromkeys(item.image_path for items in by_split.values() for item in items))

    with ThreadPoolExecutor(max_workers=_io_workers(len(sources))) as pool:
        # 1. every image's sha1 (the asset name), in parallel: reads and hashing release the GIL
        known = {item.image_path: item.sha1 for items in by_split.values() for item in items if item.sha1}
        todo = [s for s in sources if s not in known]
        sha = dict(known, **dict(zip(todo, _in_chunks(pool, sha1_file, todo), strict=True)))

        # 2. the plan, in dataset order: which files to link and which annotations to write
        links: list[tuple[str, str]] = []  # (source image, asset path)
        notes: dict[str, tuple[str, Item]] = {}  # annotation path -> (asset name, first item with those bytes)
        folders: dict[str, None] = {}
        index_lines: dict[str, list[str]] = {}
        for split, items in by_split.items():
            lines: list[str] = []
            seen = set()
            for item in items:
                src = item.image_path
                h = sha[src]
                name = h + (os.path.splitext(src)[1].lower() or ".jpg")
                rel = f"assets/{h[-2:]}/{name}"
                if name not in stats.sources:
                    stats.sources[name] = src
                    folders[f"{in_str}/assets/{h[-2:]}"] = None
                    links.append((src, f"{in_str}/{rel}"))
                if h in seen:
                    stats.duplicates += 1
                    continue
                seen.add(h)
                if split == "candidate":
                    lines.append(f"{prefix}/{rel}\n")
                    continue
                if fmt == "coco":
                    if h not in coco_ids:
                        w, hh = image_size(src)
                        coco_ids[h] = len(coco_ids) + 1
                        coco["images"].append({"id": coco_ids[h], "file_name": name, "width": w, "height": hh})
                        for b in item.boxes:
                            coco["annotations"].append(
                                {
                                    "id": len(coco["annotations"]) + 1,
                                    "image_id": coco_ids[h],
                                    "category_id": b.class_id + 1,
                                    "bbox": [b.x, b.y, b.w, b.h],
                                    "area": b.w * b.h,
                                    "iscrowd": 0,
                                }
                            )
                    anno_rel = coco_rel
                else:
                    anno_rel = f"annotations/{h[-2:]}/{h}.{'xml' if fmt == 'voc' else 'txt'}"
                    folders[f"{in_str}/annotations/{h[-2:]}"] = None
                    notes.setdefault(f"{in_str}/{anno_rel}", (name, item))
                lines.append(f"{prefix}/{rel}\t{prefix}/{anno_rel}\n")
            index_lines[split] = lines

        # 3. the files, in parallel (each folder made once, before)
        for d in folders:
            os.makedirs(d, exist_ok=True)

        def place(job: tuple[str, str]) -> str:
            return place_file(job[0], job[1], mode, make_parent=False)

        def annotate(job: tuple[str, tuple[str, Item]]) -> None:
            path, (name, item) = job
            text = voc_xml(name, image_size(item.image_path), item.boxes) if fmt == "voc" else ark_text(item.boxes)
            _write_new(path, text)

        # links and annotation files go together: both are mostly inode work in the kernel
        placed = _in_chunks(pool, place, links, wait=False)
        annotated = _in_chunks(pool, annotate, list(notes.items()), wait=False)
        for job, m in zip(links, placed(), strict=True):
            if m != "exists":
                stats.methods[m] = stats.methods.get(m, 0) + 1
                stats.assets += 1
            if m == "link":
                stats.linked.append(job)
        annotated()

    for split, lines in index_lines.items():
        index = in_dir / f"{split}-index.tsv"
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text("".join(lines), encoding="utf-8")
        stats.index_files[split] = str(index)
    if fmt == "coco" and coco_ids:
        import json

        (in_dir / coco_rel).parent.mkdir(parents=True, exist_ok=True)
        (in_dir / coco_rel).write_text(json.dumps(coco), encoding="utf-8")
    return stats


def _io_workers(n: int) -> int:
    """Threads for ``n`` file jobs: one for a handful; else up to 4 (at most one per core). File
    system calls and sha1 over more than 2 KiB release the GIL, so threads overlap them; beyond a
    few, the kernel's own locks (one journal, one folder) serialise them anyway (measured: 10,000
    ark annotation files + links, 0.42 s with 1 thread, 0.32 s with 2, 0.34 s with 4, 2 cores)."""
    return 1 if n < 64 else max(1, min(4, os.cpu_count() or 1))


def _in_chunks(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], jobs: list[Any], wait: bool = True) -> Any:
    """``[fn(j) for j in jobs]``, run on ``pool`` as a few contiguous chunks (a future per file
    would cost more than the file). With ``wait=False``, returns a function that waits and gives
    that list. Either raises the first failure, in job order."""
    size = max(-(-len(jobs) // (4 * _io_workers(len(jobs)))), 1)
    futures = [pool.submit(lambda part: [fn(j) for j in part], jobs[i : i + size]) for i in range(0, len(jobs), size)]

    def results() -> list[Any]:
        return [r for f in futures for r in f.result()]

    return results() if wait else results


def _write_new(path: str, text: str) -> None:
    """Create ``path`` holding ``text`` (UTF-8); an existing file (same image bytes) is kept."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    try:
        data = memoryview(text.encode("utf-8"))
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


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
    """env.yaml content for ``tasks`` with paths under ``in_root`` / ``out_root`` (docs/contract.md#envyaml).

    Below protocol 1.0.0 the ``protocol_version`` key is left out, as old platforms did.
    """
    training = "training" in tasks
    env: dict[str, Any] = {}
    if not protocol_version.startswith("0."):
        env["protocol_version"] = protocol_version
    env.update(
        {
            "task_id": task_id,
            "run_training": training,
            "run_mining": "mining" in tasks,
            "run_infer": "infer" in tasks,
            "manifest_file": manifest_file,
            "input": {
                "root_dir": in_root,
                "assets_dir": f"{in_root}/assets",
                "annotations_dir": f"{in_root}/annotations",
                "models_dir": f"{in_root}/models",
                "config_file": f"{in_root}/config.yaml",
                "training_index_file": f"{in_root}/train-index.tsv" if training else "",
                "val_index_file": f"{in_root}/val-index.tsv" if training else "",
                "candidate_index_file": "" if training else f"{in_root}/candidate-index.tsv",
            },
            "output": {
                "root_dir": out_root,
                "models_dir": f"{out_root}/models",
                "tensorboard_dir": f"{out_root}/tensorboard",
                "training_result_file": f"{out_root}/models/result.yaml",
                "mining_result_file": f"{out_root}/result.tsv",
                "infer_result_file": f"{out_root}/infer-result.json",
                "monitor_file": f"{out_root}/monitor.txt",
                "executor_log_file": f"{out_root}/ymir-executor-out.log",
            },
        }
    )
    return env


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


def prepare(
    work_dir: Path,
    ds: Dataset,
    tasks: Sequence[str],
    templates: dict[str, dict[str, Any]],
    *,
    user_config: dict[str, Any] | None = None,
    protocol_version: str = PROTOCOL_VERSION,
    container: bool = False,
    gpu_id: str = "",
    model: dict[str, Any] | None = None,
    manifest_file: str = "/img-man/manifest.yaml",
    task_id: str | None = None,
    assets: str = "auto",
) -> PreparedTask:
    """Build ``work_dir/in`` and ``work_dir/out`` for ``tasks``.

    Args:
        ds: the dataset.
        tasks: ``["training"]``, ``["mining"]``, ``["infer"]`` or ``["mining", "infer"]``.
        templates: the image's ``{task: template dict}``.
        user_config: keys the user changed (``--config``); reserved keys in it are ignored with a warning.
        container: paths in env.yaml / index files / config are ``/in``, ``/out`` (else absolute W paths).
        gpu_id: host GPU ids, e.g. ``"3,5"`` (renumbered to ``"0,1"`` in config.yaml).
        model: from :meth:`ModelStore.unpack`: ``{"class_names", "stage_name", "files"}`` (files relative
            to ``models/``), for ``pretrained_model_params`` / ``model_params_path``.
        assets: ``auto``, ``link``, ``copy`` or ``reflink`` (see :func:`place_file`).

    Raises:
        FileExistsError: ``work_dir/out`` exists and is not empty (results would mix).
        ConfigFileError: an unknown export_format.
        ValueError: tasks not one of the accepted combinations, or mining / infer without a model.
    """
    tasks = [t for t in TASKS if t in tasks]
    if tasks not in (["training"], ["mining"], ["infer"], ["mining", "infer"]):
        raise ValueError(f"tasks must be training, mining, infer or mining + infer; got {tasks}")
    if tasks != ["training"] and model is None:
        raise ValueError("mining and inference need a model: pass --model HASH[@STAGE] (or 'latest')")
    work_dir = Path(work_dir).resolve()
    in_dir, out_dir = work_dir / "in", work_dir / "out"
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty: choose a new --work-dir")
    in_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o777 if container else 0o755)  # a container may run as another --user (rootless: a mapped uid)
    task_id = task_id or make_task_id(tasks)
    warnings: list[str] = []

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
    renum, count = renumber_gpu_ids(gpu_id)
    config.update({"class_names": class_names, "gpu_id": renum, "gpu_count": count, "task_id": task_id})
    in_root = "/in" if container else str(in_dir)
    out_root = "/out" if container else str(out_dir)
    if model is not None:
        key = "pretrained_model_params" if tasks == ["training"] else "model_params_path"
        config[key] = [f"{in_root}/models/{f}" for f in model["files"]]

    if tasks == ["training"]:
        splits: tuple[str, ...] = ("train", "val")
        if not ds.train:
            raise ValueError(f"dataset {ds.name} has no training images")
    else:
        splits = ("candidate",)
        if not ds.candidate:
            raise ValueError(f"dataset {ds.name} has no candidate images")
    if tasks != ["training"] and ds.class_names and model is not None:
        unknown = [n for n in ds.class_names if n not in class_names]
        if unknown:
            warnings.append(f"the dataset's classes {unknown} are not in the model's class_names {class_names}")
    stats = write_in_dir(
        ds,
        in_dir,
        export_format=str(config.get("export_format") or "det-voc:raw"),
        path_prefix=in_root,
        mode=assets,
        splits=splits,
    )
    for split in ("train", "val", "candidate"):
        (in_dir / f"{split}-index.tsv").touch()
    env = env_yaml(tasks, task_id, protocol_version, in_root, out_root, manifest_file)
    (in_dir / "env.yaml").write_text(yaml.safe_dump(env, sort_keys=False), encoding="utf-8")
    (in_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return PreparedTask(work_dir, in_dir, out_dir, tasks, task_id, config, env, warnings, stats)
