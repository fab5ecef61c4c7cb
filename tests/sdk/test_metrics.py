"""ymir_exc.metrics: VOC all-point AP and mAP at IoU 0.5, against values computed by hand from the
PASCAL VOC devkit's rules (VOCevaldet.m / VOCap.m)."""

import subprocess
import sys

import pytest

from ymir_exc import metrics
from ymir_exc.dataset_reader import BBox
from ymir_exc.task import Detection


def test_voc_ap_all_point_area_under_monotone_curve():
    # curve (0,0) (.5,1) (1,.5) (1,0) -> monotone precision 1, 1, .5: AP = .5 * 1 + .5 * .5
    assert metrics.voc_ap([0.5, 1.0], [1.0, 0.5]) == pytest.approx(0.75)


def test_voc_ap_is_all_point_not_eleven_point():
    # one detection, recall 0.25 at precision 1: all-point 0.25; VOC2007 11-point would be 3/11
    assert metrics.voc_ap([0.25], [1.0]) == pytest.approx(0.25)


def test_voc_ap_interpolates_precision_from_the_right():
    # precision 2/3 at recall .4 is lifted to .75 (seen later at recall .6):
    # AP = .2 * 1 + .2 * 1 + .2 * .75 = 0.55
    assert metrics.voc_ap([0.2, 0.4, 0.4, 0.6], [1.0, 1.0, 2 / 3, 0.75]) == pytest.approx(0.55)


def test_voc_ap_empty_is_zero_and_lengths_must_match():
    assert metrics.voc_ap([], []) == 0.0
    with pytest.raises(ValueError):
        metrics.voc_ap([0.5], [1.0, 0.5])


def test_iou_matrix_of_continuous_boxes():
    iou = metrics.iou_matrix([[0, 0, 10, 10]], [[5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 10, 10], [1, 1, 10, 10]])
    assert iou.shape == (1, 4)
    assert iou[0].tolist() == pytest.approx([50 / 150, 0.0, 1.0, 81 / 119])


TRUTH = {
    "a.jpg": [("tree", 0, 0, 10, 10), ("tree", 20, 20, 10, 10)],
    "b.jpg": [("tree", 0, 0, 10, 10), ("car", 50, 50, 10, 10)],
}
FOUND = {"a.jpg": [("tree", 0.9, 0, 0, 10, 10), ("tree", 0.6, 21, 21, 10, 10)], "b.jpg": [("tree", 0.8, 30, 30, 5, 5)]}


def test_map_of_two_images_and_two_classes():
    # tree, by score: .9 TP, .8 FP, .6 TP (IoU 81/119); 3 boxes -> recall 1/3 1/3 2/3,
    # precision 1 .5 2/3 -> AP = 1/3 * 1 + 1/3 * 2/3 = 5/9. car: one box, no detection -> AP 0.
    m = metrics.evaluate_detections(FOUND, TRUTH)
    assert m["ap"] == {"car": 0.0, "tree": pytest.approx(5 / 9)}
    assert m["mAP"] == pytest.approx((5 / 9 + 0.0) / 2)
    assert m["mAR"] == pytest.approx((2 / 3 + 0.0) / 2)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 2)
    assert isinstance(m["mAP"], float) and isinstance(m["tp"], int)


def test_a_duplicate_detection_is_a_false_positive():
    # TP (.9), the same box again (.8, FP), TP (.7): recall .5 .5 1, precision 1 .5 2/3
    found = {"a.jpg": [("tree", 0.9, 0, 0, 10, 10), ("tree", 0.8, 1, 1, 10, 10), ("tree", 0.7, 20, 20, 10, 10)]}
    m = metrics.evaluate_detections(found, {"a.jpg": TRUTH["a.jpg"]})
    assert m["mAP"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 0)


def test_iou_of_exactly_the_threshold_counts_and_just_below_does_not():
    truth = {"a.jpg": [("tree", 0, 0, 10, 10)]}
    assert metrics.evaluate_detections({"a.jpg": [("tree", 1.0, 0, 0, 10, 5)]}, truth)["tp"] == 1  # IoU 50/100
    assert metrics.evaluate_detections({"a.jpg": [("tree", 1.0, 0, 0, 10, 4)]}, truth)["tp"] == 0  # IoU 40/100


def test_a_box_in_another_image_or_of_another_class_is_not_a_match():
    truth = {"a.jpg": [("tree", 0, 0, 10, 10)], "b.jpg": []}
    m = metrics.evaluate_detections(
        {"b.jpg": [("tree", 0.9, 0, 0, 10, 10)], "a.jpg": [("car", 0.9, 0, 0, 10, 10)]}, truth
    )
    assert m["ap"] == {"car": None, "tree": 0.0} and m["mAP"] == 0.0 and (m["tp"], m["fp"], m["fn"]) == (0, 2, 1)


def test_score_ties_keep_the_input_order():
    truth = {"a.jpg": [("tree", 0, 0, 10, 10)]}
    fp, tp = ("tree", 0.5, 40, 40, 10, 10), ("tree", 0.5, 0, 0, 10, 10)
    # FP then TP: recall 0 1, precision 0 .5 -> AP .5; TP then FP: recall 1 1, precision 1 .5 -> AP 1
    assert metrics.evaluate_detections({"a.jpg": [fp, tp]}, truth)["mAP"] == pytest.approx(0.5)
    assert metrics.evaluate_detections({"a.jpg": [tp, fp]}, truth)["mAP"] == pytest.approx(1.0)


def test_typed_items_and_detections_are_accepted():
    truth = {"a.jpg": [BBox(0, "tree", 0, 0, 10, 10), BBox(0, "tree", 20, 20, 10, 10)]}
    found = {"a.jpg": [Detection("tree", 0.9, x=0, y=0, w=10, h=10)]}
    m = metrics.evaluate_detections(found, truth)
    assert m["ap"] == {"tree": pytest.approx(0.5)} and m["mAR"] == pytest.approx(0.5)


def test_classes_fix_the_reported_order_and_include_unseen_ones():
    m = metrics.evaluate_detections(FOUND, TRUTH, classes=["tree", "car", "dog"])
    assert list(m["ap"]) == ["tree", "car", "dog"] and m["ap"]["dog"] is None
    assert m["mAP"] == pytest.approx((5 / 9) / 2)  # dog has no ground truth: not in the mean


def test_no_ground_truth_at_all_gives_zero():
    m = metrics.evaluate_detections({}, {"a.jpg": []})
    assert m == {"mAP": 0.0, "mAR": 0.0, "ap": {}, "tp": 0, "fp": 0, "fn": 0}


def test_detections_of_an_image_without_ground_truth_entry_are_an_error():
    with pytest.raises(ValueError, match="c.jpg"):
        metrics.evaluate_detections({"c.jpg": [("tree", 0.9, 0, 0, 1, 1)]}, {"a.jpg": []})


def test_importing_metrics_does_not_import_numpy():
    code = "import sys, ymir_exc.metrics; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_box_or_detection_with_the_wrong_number_of_fields_is_an_error():
    with pytest.raises(ValueError, match=r"\(class, x, y, w, h\)"):
        metrics.evaluate_detections({}, {"a.jpg": [("tree", 0, 0, 10)]})
    with pytest.raises(ValueError, match=r"\(class, score, x, y, w, h\)"):
        metrics.evaluate_detections({"a.jpg": [("tree", 0, 0, 10, 10)]}, {"a.jpg": []})
