"""The 80 COCO thing classes, in the contiguous-id order Detectron2's COCO models predict."""

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
assert len(COCO_CLASSES) == 80

#: COCO person keypoints (Detectron2's ``COCO_PERSON_KEYPOINT_NAMES``), in the order its Keypoint R-CNNs
#: predict them.
COCO_KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
#: The lines drawn between them (Detectron2's ``KEYPOINT_CONNECTION_RULES``, without its colours).
COCO_KEYPOINT_SKELETON = (
    ("left_ear", "left_eye"), ("right_ear", "right_eye"), ("left_eye", "nose"), ("nose", "right_eye"),
    ("left_shoulder", "right_shoulder"), ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
    ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_hip", "right_hip"),
    ("left_hip", "left_knee"), ("right_hip", "right_knee"), ("left_knee", "left_ankle"),
    ("right_knee", "right_ankle"),
)
#: COCO's per-keypoint OKS sigmas (pycocotools' default ``kpt_oks_sigmas``).
COCO_KEYPOINT_OKS_SIGMAS = (.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107,
                            .087, .087, .089, .089)
assert len(COCO_KEYPOINT_NAMES) == len(COCO_KEYPOINT_OKS_SIGMAS) == 17


#: Panoptic FPN's semantic classes on COCO panoptic, in the order its semantic head predicts them
#: (Detectron2's ``coco_panoptic_separated`` metadata ``stuff_classes``): label 0 stands for all 80
#: thing classes together, labels 1..53 are the stuff classes.
COCO_PANOPTIC_STUFF_CLASSES = (
    "things", "banner", "blanket", "bridge", "cardboard", "counter", "curtain", "door-stuff", "floor-wood",
    "flower", "fruit", "gravel", "house", "light", "mirror-stuff", "net", "pillow", "platform", "playingfield",
    "railroad", "river", "road", "roof", "sand", "sea", "shelf", "snow", "stairs", "tent", "towel", "wall-brick",
    "wall-stone", "wall-tile", "wall-wood", "water", "window-blind", "window", "tree", "fence", "ceiling", "sky",
    "cabinet", "table", "floor", "pavement", "mountain", "grass", "dirt", "paper", "food", "building", "rock",
    "wall", "rug",
)
assert len(COCO_PANOPTIC_STUFF_CLASSES) == 54
