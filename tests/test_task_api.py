import json

from ymir_exc.task import Detection, Task


def test_typed_task_reads_items_and_writes_every_result(ws):
    img = ws.in_dir / "a.jpg"
    anno = ws.in_dir / "a.txt"
    anno.write_text("1, 0, 0, 9, 19\n")
    (ws.in_dir / "train-index.tsv").write_text(f"{img}\t{anno}\n")
    (ws.in_dir / "candidate-index.tsv").write_text(f"{img}\n")
    ws.write_config(class_names=["cat", "dog"], export_format="ark:raw", gpu_id="0,1")
    task = Task.current()
    assert task.tasks == ["training"] and task.gpu_ids == [0, 1] and task.count("train") == 1
    [item] = list(task.items("train"))
    assert (item.boxes[0].class_name, item.boxes[0].w, item.boxes[0].h) == ("dog", 10, 20)
    task.progress(0.4)
    assert ws.monitor_text().split("\t")[2] == "0.40"
    ws.model_file("w.pt")
    task.save_stage("epoch_1", ["w.pt"], mAP=0.5, mAR=0.6)
    assert ws.result()["model_stages"]["epoch_1"]["mAR"] == 0.6
    task.save_mining({"/a.jpg": 0.1, "/b.jpg": 0.7})
    assert (ws.out_dir / "result.tsv").read_text().splitlines()[0].startswith("/b.jpg\t")
    task.save_infer({str(img): [Detection("cat", 0.5, 1, 2, 3, 4)]})
    data = json.loads((ws.out_dir / "infer-result.json").read_text())
    assert data["detection"]["a.jpg"]["boxes"][0]["box"] == {"x": 1, "y": 2, "w": 3, "h": 4}
