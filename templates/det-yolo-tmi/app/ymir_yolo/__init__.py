"""det-yolo-tmi's code: Ultralytics YOLO training, mining and inference behind the ymir_exc SDK.

- :mod:`ymir_yolo.offline`: environment for offline, non-root runs (before importing Ultralytics);
- :mod:`ymir_yolo.params`: the templates' hyper-parameters, checked;
- :mod:`ymir_yolo.train`: the training task;
- :mod:`ymir_yolo.predict`: mining and inference (one model load, one batched pass);
- :mod:`ymir_yolo.scoring`: the mining algorithms (random, entropy, ALDD).
"""
