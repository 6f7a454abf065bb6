"""MLflow records the server never took: spilled to the run's storage by rank 0, sent later by the driver.

At the end of training rank 0's ``BufferedLogger`` waits a bounded time for an unreachable tracking server.
What is still pending then is not dropped: it is written to ``<train.storage_path>/<train.run_name>/
mlflow-unsent/`` (beside the Ray run's checkpoints, so shared storage on a cluster: a local path, NFS,
``s3://`` or ``gs://``), one folder per spill holding ``records.jsonl`` and the preview folders it names.
The driver sends such folders once the server answers (``deliver``): right after training, before the
generator is registered, and when a later run of the same name starts.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SPOOL = "mlflow-unsent"
RECORDS = "records.jsonl"

Record = tuple[str, tuple]  # (kind, payload) as BufferedLogger holds it


def spool_uri(config: dict) -> str:
    train = config["train"]
    return f"{str(train['storage_path']).rstrip('/')}/{train['run_name']}/{SPOOL}"


def _filesystem(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def send(client, run_id: str, kind: str, payload: tuple) -> None:
    """Send one record; an artifacts record's local folder is deleted once uploaded."""
    if kind == "metrics":
        client.log_batch(run_id, metrics=payload[0], synchronous=True)
    elif kind == "artifacts":
        local_dir, artifact_path = payload
        client.log_artifacts(run_id, local_dir, artifact_path)
        shutil.rmtree(local_dir, ignore_errors=True)
    elif kind == "tag":
        client.set_tag(run_id, *payload)
    else:
        raise ValueError(f"unknown MLflow record kind {kind!r}")


def _write_records(fs, folder: str, lines: Sequence[dict]) -> None:
    """records.jsonl, replaced whole (written beside, then moved): a reader sees the old list or the new."""
    partial = f"{folder}/{RECORDS}.partial"
    with fs.open_output_stream(partial) as out:
        out.write("".join(json.dumps(line) + "\n" for line in lines).encode())
    fs.move(partial, f"{folder}/{RECORDS}")


def spill(run_id: str, records: Sequence[Record], uri: str) -> str:
    """Write ``records`` of MLflow run ``run_id`` to a new folder under ``uri``; return that folder."""
    import pyarrow.fs

    fs, root = _filesystem(uri)
    folder = f"{root}/{run_id}-{time.time_ns()}"
    fs.create_dir(folder)
    lines: list[dict[str, Any]] = []
    for i, (kind, payload) in enumerate(records):
        if kind == "metrics":
            lines.append({"kind": kind, "metrics": [[m.key, m.value, m.timestamp, m.step] for m in payload[0]]})
        elif kind == "tag":
            lines.append({"kind": kind, "tag": list(payload)})
        elif kind == "artifacts":
            local_dir, artifact_path = payload
            fs.create_dir(f"{folder}/{i}")
            pyarrow.fs.copy_files(local_dir, f"{folder}/{i}", source_filesystem=pyarrow.fs.LocalFileSystem(),
                                  destination_filesystem=fs)
            shutil.rmtree(local_dir, ignore_errors=True)
            lines.append({"kind": kind, "dir": str(i), "artifact_path": artifact_path})
        else:
            raise ValueError(f"unknown MLflow record kind {kind!r}")
    _write_records(fs, folder, lines)  # last: a folder without records.jsonl is an interrupted spill
    return folder


def _record(line: dict, local: Path) -> Record:
    from mlflow.entities import Metric

    if line["kind"] == "metrics":
        return "metrics", ([Metric(k, v, t, s) for k, v, t, s in line["metrics"]],)
    if line["kind"] == "tag":
        return "tag", tuple(line["tag"])
    return "artifacts", (str(local / line["dir"]), line["artifact_path"])


def deliver(client, run_id: str, uri: str, wait_s: float = 0.0, retry_s: float = 2.0,
            log: Callable[[str], None] = print) -> int:
    """Send every spilled folder of ``run_id`` under ``uri``, in the order spilled, retrying for up to
    ``wait_s`` seconds while the server does not answer. Sent folders are deleted; a folder that fails
    part-way keeps only the records not yet sent. Returns the number of records still kept."""
    import pyarrow.fs

    fs, root = _filesystem(uri)
    found = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    folders = sorted((info.path for info in found if info.type == pyarrow.fs.FileType.Directory
                      and Path(info.path).name.startswith(f"{run_id}-")),
                     key=lambda path: int(Path(path).name.rsplit("-", 1)[1]))
    deadline, left = time.time() + wait_s, 0
    for folder in folders:
        if fs.get_file_info(f"{folder}/{RECORDS}").type != pyarrow.fs.FileType.File:
            continue  # an interrupted spill
        if left:  # an earlier folder is still kept: later records wait behind it, in order
            with fs.open_input_stream(f"{folder}/{RECORDS}") as records:
                left += records.read().decode().count("\n")
            continue
        left += _deliver_folder(client, run_id, fs, folder, deadline, retry_s, log)
    return left


def _deliver_folder(client, run_id: str, fs, folder: str, deadline: float, retry_s: float,
                    log: Callable[[str], None]) -> int:
    import pyarrow.fs

    with tempfile.TemporaryDirectory(prefix="wavegan-unsent-") as tmp:
        local = Path(tmp)
        pyarrow.fs.copy_files(folder, str(local), source_filesystem=fs,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())
        lines = [json.loads(line) for line in (local / RECORDS).read_text().splitlines() if line.strip()]
        for sent in range(len(lines)):
            while True:
                try:
                    send(client, run_id, *_record(lines[sent], local))
                    break
                except Exception as exc:  # server still away: retry until the deadline, then keep the rest
                    if time.time() + retry_s > deadline:
                        if sent:
                            _write_records(fs, folder, lines[sent:])
                        log(f"[train] MLflow unreachable ({type(exc).__name__}): {len(lines) - sent} records "
                            f"kept in {folder}; the next run of this name sends them")
                        return len(lines) - sent
                    time.sleep(retry_s)
    fs.delete_dir(folder)
    log(f"[train] sent {len(lines)} MLflow records that training had kept in {folder}")
    return 0
