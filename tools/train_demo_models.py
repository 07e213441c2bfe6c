"""Train the two d2ov demo models (Mask R-CNN and Faster R-CNN, plain Detectron2) from scratch on
the synthetic "shapes" data set (tools/make_shapes.py), evaluate them on the test split with
PyTorch + pycocotools, and write the training artefacts to models/demo/{mask_rcnn_shapes,faster_rcnn_shapes}/
(config.yaml, model_final.pth, train_log.txt, metrics.json), their catalog cards to
d2ov_core/data/demo/<name>.json and four test images to d2ov_core/data/samples/ (both ship with
the package). `make bundle` then converts them into d2ov_core/data/ir/.

Reproducible: fixed seeds for data generation, weight init, data order and augmentation.

The shipped weights came from (2 cores; data-parallel, two processes of one thread each):

    python -m tools.train_demo_models --model both --faster-init mask --ddp 2 --optimizer adamw \
        --lr 0.001 --faster-lr 0.0002 --mask-iters 3400 --faster-iters 400 --max-minutes 58

The Mask R-CNN trains from scratch; the Faster R-CNN starts from its backbone, FPN, RPN and box head
and is fine-tuned without the mask head (both logs and model.json say so).

The keypoint demo model (``--model keypoint``: a Keypoint R-CNN on tools/make_figures.py's stick
figures, written to models/demo/keypoint_rcnn_figures/ with its card and figures_*.jpg samples) was
trained from scratch in two phases, 56 minutes in all: the first run was stopped by hand after its
checkpoint at iteration 1600 (its 3200-iteration schedule would not have finished in the budget),
the second continued those weights with a schedule that anneals to zero::

    python -m tools.train_demo_models --model keypoint --ddp 2 --optimizer adamw --lr 0.001 \
        --keypoint-iters 3200 --max-minutes 58          # stopped after the checkpoint at 1600
    cp models/demo/keypoint_rcnn_figures/model_final.pth .cache/figures/phase1_iter1600.pth
    python -m tools.train_demo_models --model keypoint --ddp 2 --optimizer adamw --lr 0.0005 --warmup 20 \
        --keypoint-iters 700 --keypoint-init .cache/figures/phase1_iter1600.pth --max-minutes 17

(``--keypoint-stop 1600`` reproduces the first phase without stopping it by hand.) ``--max-minutes`` is only a
safety net; if it ever cuts a run short the log prints the ``--mask-stop/--faster-stop`` that
reproduces those weights on a machine of any speed (--keypoint-stop, --panoptic-stop likewise).

The panoptic demo model (``--model panoptic``: a PanopticFPN -- the Mask R-CNN above plus
Detectron2's semantic FPN head, GN, 64 channels -- on tools/make_panoptic.py's shapes (things) over
2-4 textured regions (stuff), written to models/demo/panoptic_fpn_shapes/ with its card and
panoptic_*.jpg samples) was trained from scratch in one run, 56.0 minutes for 3000 iterations
(1.12 s/iter; PQ 65.3 on the test split)::

    python -m tools.train_demo_models --model panoptic --ddp 2 --optimizer adamw --lr 0.001 \
        --panoptic-iters 3000 --max-minutes 58

Its evaluation adds PQ / SQ / RQ (d2ov_core.measure.panoptic_quality) on the test split's COCO
panoptic ground truth; the predictions are kept in .cache/panoptic/pred_test{.json,/}, and
``--model panoptic --panoptic-pq-only`` recomputes PQ from them.

Other uses:

    python -m tools.train_demo_models                         # one after the other, default schedule
    python -m tools.train_demo_models --time-iters 30          # only measure s/iter, write nothing
    python -m tools.train_demo_models --model mask --mask-iters 1800
    python -m tools.train_demo_models --model faster --faster-init mask --faster-iters 300
    python -m tools.train_demo_models --model both --faster-init scratch --parallel   # both from scratch, at once

Run from the repository's root (``python -m tools.train_demo_models``: it imports the generators as
``tools.make_shapes`` etc.). One run's settings (optimizer, log interval, crop, time budget, DDP rank)
are a :class:`Run` made by :func:`start_run`; nothing is kept in module globals.

The Faster R-CNN is either trained from scratch (``--faster-init scratch``) or initialised from the
trained Mask R-CNN's backbone / RPN / box-head weights and fine-tuned (``--faster-init mask``, the
default); the log and model.json say which.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from collections import defaultdict, deque

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARDS_DIR = os.path.join(ROOT, "d2ov_core", "data", "demo")  # catalog cards (ship with the package)
SAMPLES_DIR = os.path.join(ROOT, "d2ov_core", "data", "samples")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from d2ov_core.export import compat  # noqa: E402

compat.apply()

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import CfgNode, get_cfg  # noqa: E402
from detectron2.data import (  # noqa: E402
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data import transforms as T  # noqa: E402
from detectron2.data.datasets import register_coco_instances  # noqa: E402
from detectron2.evaluation.coco_evaluation import instances_to_coco_json  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.solver import build_lr_scheduler, build_optimizer  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from d2ov_core.store.cache import sha256_file  # noqa: E402

from . import make_figures, make_panoptic, make_shapes  # noqa: E402

CLASSES = make_shapes.CLASSES
SEED = 20260125
LOG = logging.getLogger("train_demo")
COCO_STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
KEYPOINT_STAT_NAMES = ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]


# ------------------------------------------------------------------------------------------- setup
@dataclasses.dataclass(frozen=True)
class Run:
    """One run's settings that are not in the Detectron2 config (from the command line)."""

    optimizer: str = "sgd"  # "sgd" (Detectron2's build_optimizer) or "adamw"
    log_every: int = 20  # iterations between log lines (and metrics.json "train" entries)
    crop: int = 352  # fixed square training input (FixedSizeCrop)
    deadline: float | None = None  # time.time() after which training stops early (--max-minutes)


def start_run(a: argparse.Namespace) -> Run:
    """Start this process's part of a run: join the process group if it is a DDP rank (env
    D2OV_TRAIN_RANK, set by :func:`launch_ddp`; one thread then), set torch's threads, and return
    the :class:`Run` the training functions are given."""
    rank = _env_rank()
    threads = a.threads
    if rank >= 0:
        import torch.distributed as dist

        dist.init_process_group(
            "gloo", init_method="env://", rank=rank, world_size=a.ddp, timeout=datetime.timedelta(minutes=90)
        )
        threads = 1
    torch.set_num_threads(threads)
    deadline = time.time() + a.max_minutes * 60 if a.max_minutes else None
    return Run(optimizer=a.optimizer, log_every=a.log_every, crop=a.crop, deadline=deadline)


def _env_rank() -> int:
    """This process's DDP rank when :func:`launch_ddp` started it, else -1."""
    return int(os.environ.get("D2OV_TRAIN_RANK", "-1"))


def _self_cmd(args: list[str]) -> list[str]:
    """The command line that runs this script again with ``args`` (from the repository's root)."""
    return [sys.executable, "-m", "tools.train_demo_models", *args]


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_logging(path: str | None, append: bool = False) -> None:
    LOG.setLevel(logging.INFO)
    for h in list(LOG.handlers):
        LOG.removeHandler(h)
    fmt = logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S")
    sh = logging.StreamHandler(sys.stdout)
    sh.setFormatter(fmt)
    LOG.addHandler(sh)
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fh = logging.FileHandler(path, mode="a" if append else "w")
        fh.setFormatter(fmt)
        LOG.addHandler(fh)
    LOG.propagate = False


def _split_current(path: str, num: int, seed: int, version) -> bool:
    """Whether the split's COCO JSON at ``path`` holds ``num`` images made by this generator
    ``version`` with ``seed`` (else it is generated again)."""
    if not os.path.exists(path):
        return False
    with open(path) as f:
        d = json.load(f)
    info = d.get("info", {})
    return len(d["images"]) == num and f"seed {seed}" in info.get("description", "") and info.get("version") == version


def ensure_data(work: str, train_num: int, test_num: int, gen=make_shapes) -> dict:
    """Generate (if missing or stale) and register the train and test splits of ``gen``'s data set
    (make_shapes: ``d2ov_shapes_*``; make_figures: ``d2ov_figures_*`` with keypoint metadata)."""
    os.makedirs(work, exist_ok=True)
    paths = {}
    kind = "figures" if gen is make_figures else "shapes"
    for split, num in (("train", train_num), ("test", test_num)):
        seed = gen.DEFAULT_SPLITS[split][1]
        p = os.path.join(work, f"{split}.json")
        if not _split_current(p, num, seed, gen.GENERATOR_VERSION):
            t = time.time()
            LOG.info(f"generating {kind} {split} split: {num} images, seed {seed} -> {work}")
            gen.make_split(work, split, num, seed)
            LOG.info(f"  done in {time.time() - t:.0f} s")
        paths[split] = p
        name = f"d2ov_{kind}_{split}"
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, p, work)
            md = MetadataCatalog.get(name)
            md.thing_classes = list(gen.CLASSES)
            if gen is make_figures:
                md.keypoint_names = list(make_figures.KEYPOINTS)
                md.keypoint_flip_map = list(make_figures.FLIP_MAP)
    return paths


def ensure_panoptic_data(work: str, train_num: int, test_num: int) -> dict:
    """Generate (if missing or stale) and register the train and test splits of make_panoptic.py's
    data set as ``d2ov_panoptic_{train,test}``: COCO instances (things) plus, per dataset dict,
    ``sem_seg_file_name`` (Detectron2's DatasetMapper then loads the "separated" semantic labels that
    PanopticFPN's semantic head trains on). Returns {split: instances json path}."""
    from detectron2.data.datasets import load_coco_json

    os.makedirs(work, exist_ok=True)
    paths = {}
    for split, num in (("train", train_num), ("test", test_num)):
        seed = make_panoptic.DEFAULT_SPLITS[split][1]
        p = os.path.join(work, f"{split}.json")
        panoptic_json = os.path.join(work, f"{split}_panoptic.json")
        if not (os.path.exists(panoptic_json) and _split_current(p, num, seed, make_panoptic.GENERATOR_VERSION)):
            t = time.time()
            LOG.info(f"generating panoptic {split} split: {num} images, seed {seed} -> {work}")
            make_panoptic.make_split(work, split, num, seed, procs=os.cpu_count() or 1)
            LOG.info(f"  done in {time.time() - t:.0f} s")
        paths[split] = p
        name = f"d2ov_panoptic_{split}"
        if name not in DatasetCatalog.list():

            def load(p=p, split=split, name=name):
                dicts = load_coco_json(p, work, name)
                for d in dicts:
                    stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
                    d["sem_seg_file_name"] = os.path.join(work, f"{split}_sem", stem + ".png")
                return dicts

            DatasetCatalog.register(name, load)
            MetadataCatalog.get(name).set(
                json_file=p,
                image_root=work,
                evaluator_type="coco_panoptic_seg",
                thing_classes=list(make_panoptic.THING_CLASSES),
                stuff_classes=["things", *make_panoptic.STUFF_CLASSES],
                ignore_label=make_panoptic.IGNORE,
                panoptic_json=os.path.join(work, f"{split}_panoptic.json"),
                panoptic_root=os.path.join(work, f"{split}_panoptic"),
                sem_seg_root=os.path.join(work, f"{split}_sem"),
            )
    return paths


def build_cfg(mask_on: bool, args, keypoint_on: bool = False, panoptic_on: bool = False) -> CfgNode:
    cfg = get_cfg()
    m = cfg.MODEL
    m.META_ARCHITECTURE = "GeneralizedRCNN"
    m.DEVICE = "cpu"
    m.WEIGHTS = ""
    m.MASK_ON = mask_on
    m.PIXEL_MEAN = [127.5, 127.5, 127.5]
    m.PIXEL_STD = [64.0, 64.0, 64.0]
    m.BACKBONE.NAME = "build_resnet_fpn_backbone"
    m.BACKBONE.FREEZE_AT = 0
    m.RESNETS.DEPTH = 50
    m.RESNETS.NUM_GROUPS = 1
    m.RESNETS.WIDTH_PER_GROUP = 16
    m.RESNETS.STEM_OUT_CHANNELS = 24
    m.RESNETS.RES2_OUT_CHANNELS = 64
    m.RESNETS.NORM = "BN"
    m.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    m.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    m.FPN.OUT_CHANNELS = 64
    m.FPN.NORM = "BN"
    # one size per level (Detectron2's FPN default, halved: the shapes are 12-200 px): 3 anchors per
    # position instead of 6 halves the RPN's matching and loss work
    m.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128], [256]]
    m.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    m.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    m.RPN.PRE_NMS_TOPK_TRAIN = 1000
    m.RPN.POST_NMS_TOPK_TRAIN = 500
    m.RPN.PRE_NMS_TOPK_TEST = 1000
    m.RPN.POST_NMS_TOPK_TEST = 500
    m.RPN.BATCH_SIZE_PER_IMAGE = 256
    m.ROI_HEADS.NAME = "StandardROIHeads"
    m.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    m.ROI_HEADS.NUM_CLASSES = len(CLASSES)
    m.ROI_HEADS.BATCH_SIZE_PER_IMAGE = args.roi_batch
    # TEST settings left at Detectron2 defaults: SCORE_THRESH_TEST 0.05, NMS 0.5, 100 detections
    m.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    m.ROI_BOX_HEAD.NUM_FC = 2
    m.ROI_BOX_HEAD.FC_DIM = 256
    m.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    m.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0
    m.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    m.ROI_MASK_HEAD.NUM_CONV = 4
    m.ROI_MASK_HEAD.CONV_DIM = 64
    m.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
    m.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
    cfg.INPUT.MIN_SIZE_TRAIN = (320, 352, 384, 416, 448, 480)
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.MAX_SIZE_TRAIN = 640
    cfg.INPUT.MIN_SIZE_TEST = 416
    cfg.INPUT.MAX_SIZE_TEST = 640
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    cfg.DATASETS.TRAIN = ("d2ov_shapes_train",)
    cfg.DATASETS.TEST = ("d2ov_shapes_test",)
    cfg.DATALOADER.NUM_WORKERS = args.workers
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = True
    s = cfg.SOLVER
    s.IMS_PER_BATCH = args.batch
    s.BASE_LR = args.lr
    s.MOMENTUM = 0.9
    s.WEIGHT_DECAY = 1e-4
    s.WEIGHT_DECAY_NORM = 0.0
    s.LR_SCHEDULER_NAME = "WarmupCosineLR"
    s.WARMUP_METHOD = "linear"
    s.WARMUP_FACTOR = 0.001
    s.WARMUP_ITERS = args.warmup
    s.CLIP_GRADIENTS.ENABLED = args.clip > 0
    s.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    s.CLIP_GRADIENTS.CLIP_VALUE = args.clip if args.clip > 0 else 1.0
    s.CLIP_GRADIENTS.NORM_TYPE = 2.0
    s.CHECKPOINT_PERIOD = args.ckpt_every
    cfg.SEED = SEED
    cfg.OUTPUT_DIR = ""
    if keypoint_on:  # the stick-figure model: one class, 7 keypoints, a 4-conv keypoint head
        m.KEYPOINT_ON = True
        m.ROI_HEADS.NUM_CLASSES = 1
        m.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = len(make_figures.KEYPOINTS)
        m.ROI_KEYPOINT_HEAD.CONV_DIMS = (128,) * 4
        m.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION = 14
        m.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO = 0
        m.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE = 1
        # figures are tall and thin: a taller anchor besides Detectron2's three
        m.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0, 3.0]]
        cfg.TEST.KEYPOINT_OKS_SIGMAS = list(make_figures.OKS_SIGMAS)
        cfg.DATASETS.TRAIN = ("d2ov_figures_train",)
        cfg.DATASETS.TEST = ("d2ov_figures_test",)
    if panoptic_on:  # the panoptic model: the Mask R-CNN above plus PanopticFPN's semantic FPN head
        m.META_ARCHITECTURE = "PanopticFPN"
        m.MASK_ON = True
        m.SEM_SEG_HEAD.NAME = "SemSegFPNHead"
        m.SEM_SEG_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        m.SEM_SEG_HEAD.NUM_CLASSES = len(make_panoptic.STUFF_CLASSES) + 1  # 0 = things, 1..S = stuff
        m.SEM_SEG_HEAD.IGNORE_VALUE = make_panoptic.IGNORE
        m.SEM_SEG_HEAD.CONVS_DIM = 64
        m.SEM_SEG_HEAD.COMMON_STRIDE = 4
        m.SEM_SEG_HEAD.NORM = "GN"
        m.SEM_SEG_HEAD.LOSS_WEIGHT = 0.5  # as Detectron2's Base-Panoptic-FPN.yaml
        # combine: Detectron2's defaults (overlap 0.5, instance score 0.5) except the stuff-area limit:
        # 4096 px was set for COCO images of ~1 MP; these are 256-640 px a side (~0.2 MP), and
        # make_panoptic.py leaves stuff under MIN_STUFF_AREA = 1024 px unlabeled: the same limit
        m.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT = make_panoptic.MIN_STUFF_AREA
        cfg.DATASETS.TRAIN = ("d2ov_panoptic_train",)
        cfg.DATASETS.TEST = ("d2ov_panoptic_test",)
    return cfg


# ------------------------------------------------------------------------------------------- train
def make_optimizer(cfg, model, optimizer: str):
    """SGD as Detectron2 builds it (``build_optimizer``), or AdamW (``--optimizer adamw``) with no
    weight decay on norm layers and biases (its gradient clipping happens in the training loop)."""
    if optimizer == "sgd":
        return build_optimizer(cfg, model)
    decay, no_decay = [], []
    for _name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.SOLVER.WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.SOLVER.BASE_LR,
        betas=(0.9, 0.999),
    )
    return opt


def save_weights(model: torch.nn.Module, path: str) -> None:
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    tmp = path + ".tmp"
    torch.save({"model": sd}, tmp)
    os.replace(tmp, path)


def write_config(cfg, out_dir: str) -> None:
    c = cfg.clone()
    c.defrost()
    c.MODEL.WEIGHTS = ""
    c.MODEL.DEVICE = "cpu"
    with open(os.path.join(out_dir, "config.yaml"), "w") as f:
        f.write(c.dump())


def train(
    cfg, run: Run, iters: int, out_dir: str, metrics: dict, init_state: dict | None = None, stop: int | None = None
) -> tuple[torch.nn.Module, int, float]:
    """Train ``iters`` iterations of the schedule (warm-up + cosine over ``iters``); stop early at
    iteration ``stop`` or when ``run.deadline`` (time.time()) has passed, whichever comes first."""
    seed_all(SEED)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.MAX_ITER = iters
    cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, max(iters // 4, 1))
    cfg.freeze()
    model = build_model(cfg)
    rank, world = _dist()
    if init_state is not None:
        missing, unexpected = model.load_state_dict(init_state, strict=False)
        LOG.info(
            f"initialised from given weights: {len(init_state)} tensors loaded, "
            f"missing (newly initialised) {len(missing)}: {sorted(set(k.rsplit('.', 2)[0] for k in missing))}, "
            f"unexpected (dropped) {len(unexpected)}: {sorted(set(k.rsplit('.', 3)[0] for k in unexpected))}"
        )
    model.train()
    net = model
    if world > 1:
        # data-parallel on CPU: each process (one thread) takes IMS_PER_BATCH / world images of
        # every batch (Detectron2's TrainingSampler shards by rank); gradients are averaged (gloo)
        net = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    optimizer = make_optimizer(cfg, model, run.optimizer)
    scheduler = build_lr_scheduler(cfg, optimizer)
    # Fixed-size training batches: every new input shape costs seconds of one-off kernel set-up
    # on CPU (measured: 8-16 s for the first iteration of a new shape vs ~3 s steady), so the
    # resized images are padded / randomly cropped to a fixed square (FixedSizeCrop, pad value
    # 128 ~ PIXEL_MEAN). The model itself stays a plain GeneralizedRCNN.
    crop = _SegFixedSizeCrop if cfg.MODEL.META_ARCHITECTURE == "PanopticFPN" else T.FixedSizeCrop
    augs = [
        T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING),
        T.RandomFlip(horizontal=True, vertical=False),
        crop((run.crop, run.crop), pad=True, pad_value=128.0),
    ]
    LOG.info(f"train augmentations: {augs}")
    loader = build_detection_train_loader(cfg, mapper=DatasetMapper(cfg, is_train=True, augmentations=augs))
    n_params = sum(p.numel() for p in model.parameters())
    LOG.info(
        f"model: {n_params:,} parameters; {iters} iterations, batch {cfg.SOLVER.IMS_PER_BATCH} "
        f"({world} process{'es' if world > 1 else ''}), "
        f"base lr {cfg.SOLVER.BASE_LR}, warmup {cfg.SOLVER.WARMUP_ITERS}, {cfg.SOLVER.LR_SCHEDULER_NAME}"
    )
    if rank == 0:
        write_config(cfg, out_dir)
    window = defaultdict(lambda: deque(maxlen=run.log_every))
    t_start = time.time()
    t_data = 0.0
    done = 0
    wpath = os.path.join(out_dir, "model_final.pth")
    with EventStorage(0) as storage:
        it = iter(loader)
        for i in range(iters):
            storage.iter = i
            t0 = time.time()
            data = next(it)
            t_data += time.time() - t0
            loss_dict = net(data)
            losses = sum(loss_dict.values())
            if not torch.isfinite(losses):
                raise FloatingPointError(f"loss became {losses.item()} at iteration {i}: {loss_dict}")
            optimizer.zero_grad()
            losses.backward()
            if run.optimizer != "sgd" and cfg.SOLVER.CLIP_GRADIENTS.ENABLED:  # SGD clips inside build_optimizer
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE)
            optimizer.step()
            scheduler.step()
            done = i + 1
            for k, v in loss_dict.items():
                window[k].append(float(v))
            window["total_loss"].append(float(losses))
            if done % run.log_every == 0 or done == iters or done == 1:
                el = time.time() - t_start
                spi = el / done
                eta = spi * (iters - done)
                lr = optimizer.param_groups[0]["lr"]
                med = {k: float(np.median(v)) for k, v in window.items()}
                LOG.info(
                    f"iter {done}/{iters}  total_loss {med['total_loss']:.3f}  "
                    + "  ".join(f"{k} {v:.3f}" for k, v in med.items() if k != "total_loss")
                    + f"  lr {lr:.5f}  {spi:.2f} s/iter (data {t_data / done:.2f})  "
                    f"ETA {datetime.timedelta(seconds=int(eta))}"
                )
                metrics["train"].append({"iter": done, "lr": lr, "s_per_iter": spi, **med})
            if done % cfg.SOLVER.CHECKPOINT_PERIOD == 0 and done < iters and rank == 0:
                save_weights(model, wpath)
                LOG.info(f"checkpoint: weights after {done} iterations -> {wpath}")
            if run.deadline is not None and _any_rank(time.time() > run.deadline) and done < iters:
                LOG.info(
                    f"STOPPED EARLY at iteration {done}/{iters}: time budget reached "
                    f"(to reproduce these weights on any machine: --{_which(cfg)}-stop {done})"
                )
                break
            if stop is not None and done >= stop and done < iters:
                LOG.info(f"STOPPED at iteration {done}/{iters} as asked (--{_which(cfg)}-stop)")
                break
    minutes = (time.time() - t_start) / 60
    if rank == 0:
        save_weights(model, wpath)
    _barrier()
    LOG.info(
        f"training done: {done} iterations in {minutes:.1f} min ({minutes * 60 / max(done, 1):.2f} s/iter) -> {wpath}"
    )
    return model, done, minutes


class _SegFixedSizeCrop(T.FixedSizeCrop):
    """``FixedSizeCrop`` whose padding of the semantic labels is the ignore value (255): v0.6 pads
    them with 0, which is PanopticFPN's "things" label."""

    def _get_pad(self, image: np.ndarray):
        t = super()._get_pad(image)
        t.seg_pad_value = make_panoptic.IGNORE
        return t


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _any_rank(flag: bool) -> bool:
    """True on every process if ``flag`` is true on any (so all stop at the same iteration)."""
    rank, world = _dist()
    if world == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _barrier() -> None:
    if _dist()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def _which(cfg) -> str:
    if cfg.MODEL.META_ARCHITECTURE == "PanopticFPN":
        return "panoptic"
    return "keypoint" if cfg.MODEL.KEYPOINT_ON else "mask" if cfg.MODEL.MASK_ON else "faster"


# -------------------------------------------------------------------------------------------- eval
def evaluate(cfg, model, gt_json: str, max_images: int | None, on_output=None) -> dict:
    """Box / mask / keypoint AP (pycocotools) of ``model`` on the test split; ``on_output(input,
    output)``, if given, also sees every image's input dict and model output (for the panoptic
    model's PQ).

    Not d2ov_core.measure.evaluate: that one scores a d2ov predictor's ``Detections`` (OpenVINO or
    the PyTorch reference, from image files); this one scores the torch model the run has in memory
    through Detectron2's test loader (its inputs as training saw them), and keeps the full COCO
    summary (AR too) and the per-class AP that metrics.json records."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    model.eval()
    dataset = DatasetCatalog.get(cfg.DATASETS.TEST[0])
    # a plain sequential sampler: Detectron2's default InferenceSampler would give this process only
    # its 1/world share of the images when training ran data-parallel
    loader = build_detection_test_loader(
        dataset, mapper=DatasetMapper(cfg, is_train=False), sampler=torch.utils.data.SequentialSampler(dataset)
    )
    # dataset -> COCO image ids are kept in "image_id"
    results, ids = [], []
    t = time.time()
    with torch.no_grad():
        for n, inputs in enumerate(loader):
            if max_images is not None and n >= max_images:
                break
            out = model(inputs)
            for inp, o in zip(inputs, out):
                ids.append(inp["image_id"])
                results.extend(instances_to_coco_json(o["instances"].to("cpu"), inp["image_id"]))
                if on_output is not None:
                    on_output(inp, o)
            if (n + 1) % 50 == 0:
                LOG.info(f"  eval {n + 1} images, {(time.time() - t) / (n + 1):.2f} s/image")
    LOG.info(
        f"inference on {len(ids)} images: {(time.time() - t) / max(len(ids), 1):.2f} s/image, {len(results)} detections"
    )
    gt = COCO(gt_json)
    # the json's category ids are 1..3; detectron2 maps them to 0..2 contiguous: map back
    meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
    inv = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    for r in results:
        r["category_id"] = inv[r["category_id"]]
    stats = {"eval_images": len(ids)}
    types = ["bbox"] + (["segm"] if cfg.MODEL.MASK_ON else []) + (["keypoints"] if cfg.MODEL.KEYPOINT_ON else [])
    for iou_type in types:
        res = [dict(r) for r in results]
        if iou_type != "segm":
            for r in res:
                r.pop("segmentation", None)
        if iou_type != "keypoints":
            for r in res:
                r.pop("keypoints", None)
        dt = gt.loadRes(res) if res else COCO()
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = ids
        if iou_type == "keypoints":
            ev.params.kpt_oks_sigmas = np.array(cfg.TEST.KEYPOINT_OKS_SIGMAS)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        names = KEYPOINT_STAT_NAMES if iou_type == "keypoints" else COCO_STAT_NAMES
        s = {k: float(v) * 100 for k, v in zip(names, ev.stats)}
        # per-category AP
        prec = ev.eval["precision"]  # T, R, K, A, M
        for ki, cid in enumerate(ev.params.catIds):
            p = prec[:, :, ki, 0, -1]
            p = p[p > -1]
            s[f"AP-{gt.cats[cid]['name']}"] = float(p.mean() * 100) if p.size else float("nan")
        stats[iou_type] = s
        LOG.info(f"{iou_type}: " + "  ".join(f"{k} {v:.1f}" for k, v in s.items()))
    return stats


def verify_weights(cfg, path: str) -> None:
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert set(sd) == {"model"}, sd.keys()
    m = build_model(cfg)
    DetectionCheckpointer(m).load(path)
    own = m.state_dict()
    for k, v in sd["model"].items():
        assert torch.equal(own[k], v), k
    assert set(own) == set(sd["model"]), set(own) ^ set(sd["model"])
    LOG.info(
        f"verified {path}: torch.load(weights_only=True) ok, DetectionCheckpointer loads all "
        f"{len(own)} tensors, {os.path.getsize(path) / 1e6:.2f} MB"
    )


def finish_model(
    cfg,
    model,
    out_dir,
    name,
    task,
    metrics,
    iters,
    minutes,
    gt_json,
    eval_images,
    extra,
    on_output=None,
    card_extra=None,
):
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or threads)  # the other ranks wait idle meanwhile
    stats = evaluate(cfg, model, gt_json, eval_images, on_output=on_output)
    if card_extra is not None:  # the panoptic model: PQ from the predictions on_output saw
        card_extra = card_extra(stats)
    torch.set_num_threads(threads)
    metrics["eval"] = stats
    wpath = os.path.join(out_dir, "model_final.pth")
    verify_weights(cfg, wpath)
    info = {
        "name": name,
        "task": task,
        "classes": list(make_figures.CLASSES if cfg.MODEL.KEYPOINT_ON else CLASSES),
        "config": "config.yaml",
        "weights": "model_final.pth",
        "weights_sha256": sha256_file(wpath),
        "box_AP": round(stats["bbox"]["AP"], 2),
        "mask_AP": round(stats["segm"]["AP"], 2) if "segm" in stats else None,
        **(
            {
                "keypoint_AP": round(stats["keypoints"]["AP"], 2),
                "keypoint_names": list(make_figures.KEYPOINTS),
                "keypoint_skeleton": [list(p) for p in make_figures.SKELETON],
                "keypoint_flip_map": [list(p) for p in make_figures.FLIP_MAP],
                "keypoint_oks_sigmas": list(make_figures.OKS_SIGMAS),
            }
            if "keypoints" in stats
            else {}
        ),
        "eval_split": "test",
        "eval_images": stats["eval_images"],
        "train_iters": iters,
        "train_minutes": round(minutes, 1),
        "params": sum(p.numel() for p in model.parameters()),
        "backend": "pytorch",
        "config_sha256": sha256_file(os.path.join(out_dir, "config.yaml")),
        **(card_extra or {}),
    }
    metrics.update(extra)
    card = os.path.join(CARDS_DIR, os.path.basename(out_dir) + ".json")
    with open(card, "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
        f.write("\n")
    LOG.info(f"wrote {card}: " + json.dumps(info))
    return info


# ---------------------------------------------------------------------------------------- panoptic
class PanopticPredictionWriter:
    """``on_output`` for :func:`evaluate`: writes each image's ``panoptic_seg`` as a COCO panoptic
    PNG (id = R + 256 G + 65536 B, 0 = unassigned) to ``pred_dir`` and keeps its segments with
    DATASET category ids (thing contiguous id c -> c + 1; stuff semantic label l -> len(things) + l),
    for :meth:`save` to write ``pred_dir``.json in COCO panoptic format."""

    def __init__(self, pred_dir: str):
        self.pred_dir = pred_dir
        os.makedirs(pred_dir, exist_ok=True)
        self.annotations = []

    def __call__(self, inp: dict, out: dict) -> None:
        from PIL import Image

        pan, infos = out["panoptic_seg"]
        pan = pan.to("cpu").numpy().astype(np.int64)
        stem = os.path.splitext(os.path.basename(inp["file_name"]))[0]
        rgb = np.stack([pan % 256, (pan // 256) % 256, pan // 65536], axis=2).astype(np.uint8)
        Image.fromarray(rgb).save(os.path.join(self.pred_dir, stem + ".png"))
        n_things = len(make_panoptic.THING_CLASSES)
        segs = []
        for si in infos:
            thing = bool(si["isthing"])
            cat = int(si["category_id"]) + 1 if thing else n_things + int(si["category_id"])
            seg = {"id": int(si["id"]), "category_id": cat, "isthing": int(thing), "area": int((pan == si["id"]).sum())}
            if thing:
                seg["score"] = float(si.get("score", 1.0))
            segs.append(seg)
        self.annotations.append({"image_id": inp["image_id"], "file_name": stem + ".png", "segments_info": segs})

    def save(self) -> str:
        path = self.pred_dir.rstrip("/") + ".json"
        with open(path, "w") as f:
            json.dump({"annotations": self.annotations, "categories": make_panoptic.PANOPTIC_CATEGORIES}, f)
        LOG.info(f"panoptic predictions: {len(self.annotations)} images -> {path} (+ PNGs in {self.pred_dir})")
        return path


def panoptic_quality(gt_json: str, pred_json: str, pred_dir: str) -> dict:
    """PQ / SQ / RQ (percent; All, Things, Stuff) of saved predictions, computed with
    d2ov_core.measure.panoptic_quality."""
    from d2ov_core.measure import panoptic_quality as pqm

    gt = pqm.load_panoptic_gt(gt_json)
    acc = pqm.PQAccumulator(gt.categories)
    with open(pred_json) as f:
        pred = {a["image_id"]: a for a in json.load(f)["annotations"]}
    n = 0
    for rec in gt.images:
        p = pred.get(rec.image_id)
        if p is None:  # not evaluated (--test-images below the split's size)
            continue
        pred_map = pqm.read_panoptic_png(os.path.join(pred_dir, p["file_name"]))
        acc.add(pqm.read_panoptic_png(rec.png), rec.segments, pred_map, p["segments_info"])
        n += 1
    res = acc.result()
    LOG.info(
        f"panoptic quality on {n} images: "
        + "  ".join(
            f"{k}: PQ {v['PQ']:.1f} SQ {v['SQ']:.1f} RQ {v['RQ']:.1f}"
            for k, v in res.items()
            if k in ("All", "Things", "Stuff")
        )
    )
    return {"images": n, **res}


def panoptic_card(pq: dict | None) -> dict:
    """The panoptic model's extra catalog-card keys."""
    r = (lambda x: round(float(x), 2)) if pq else (lambda x: None)
    return {
        "task": "panoptic_segmentation",
        "stuff_classes": ["things", *make_panoptic.STUFF_CLASSES],
        "PQ": r(pq["All"]["PQ"]) if pq else None,
        "SQ": r(pq["All"]["SQ"]) if pq else None,
        "RQ": r(pq["All"]["RQ"]) if pq else None,
        "PQ_things": r(pq["Things"]["PQ"]) if pq else None,
        "PQ_stuff": r(pq["Stuff"]["PQ"]) if pq else None,
        "panoptic_categories": make_panoptic.PANOPTIC_CATEGORIES,
    }


def copy_samples(work: str, gt_json: str, out: str, prefix: str = "shapes") -> None:
    """4 varied test images: the most crowded, a sparse one, two in between."""
    with open(gt_json) as f:
        d = json.load(f)
    count = defaultdict(int)
    for a in d["annotations"]:
        count[a["image_id"]] += 1
    ims = sorted(d["images"], key=lambda im: (count[im["id"]], im["id"]))
    ims = [im for im in ims if count[im["id"]] >= 2]
    n = len(ims)
    picks = [ims[-1], ims[0], ims[n // 2], ims[(3 * n) // 4]]
    os.makedirs(out, exist_ok=True)
    for i, im in enumerate(picks, start=1):
        shutil.copyfile(os.path.join(work, im["file_name"]), os.path.join(out, f"{prefix}_{i}.jpg"))
        LOG.info(
            f"sample {prefix}_{i}.jpg <- test {im['file_name']} ({im['width']}x{im['height']}, "
            f"{count[im['id']]} objects)"
        )


# -------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.path.join(ROOT, ".cache", "shapes"), help="data set folder")
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "demo"))
    ap.add_argument(
        "--model",
        choices=["both", "mask", "faster", "keypoint", "panoptic"],
        default="both",
        help="both: the shapes models; keypoint: the stick-figure Keypoint R-CNN; panoptic: the "
        "PanopticFPN on tools/make_panoptic.py's shapes over textured regions",
    )
    ap.add_argument("--figures-work", default=os.path.join(ROOT, ".cache", "figures"), help="figures data set folder")
    ap.add_argument("--keypoint-iters", type=int, default=3000)
    ap.add_argument(
        "--keypoint-init",
        default=None,
        metavar="PTH",
        help="continue from these weights (a checkpoint of an earlier --model keypoint run) with a "
        "fresh schedule of --keypoint-iters iterations; the log is appended to",
    )
    ap.add_argument(
        "--keypoint-stop",
        type=int,
        default=None,
        help="stop the Keypoint R-CNN at this iteration (schedule still over --keypoint-iters)",
    )
    ap.add_argument(
        "--panoptic-work", default=os.path.join(ROOT, ".cache", "panoptic"), help="panoptic data set folder"
    )
    ap.add_argument("--panoptic-iters", type=int, default=3000)
    ap.add_argument(
        "--panoptic-init",
        default=None,
        metavar="PTH",
        help="continue from these weights (a checkpoint of an earlier --model panoptic run) with a "
        "fresh schedule of --panoptic-iters iterations; the log is appended to",
    )
    ap.add_argument(
        "--panoptic-stop",
        type=int,
        default=None,
        help="stop the PanopticFPN at this iteration (schedule still over --panoptic-iters)",
    )
    ap.add_argument(
        "--panoptic-pq-only",
        action="store_true",
        help="only (re)compute PQ from the saved test-split predictions of the last --model panoptic "
        "run and update its metrics.json and card",
    )
    ap.add_argument("--train-images", type=int, default=make_shapes.DEFAULT_SPLITS["train"][0])
    ap.add_argument("--test-images", type=int, default=200)
    ap.add_argument("--mask-iters", type=int, default=3000)
    ap.add_argument("--faster-iters", type=int, default=500)
    ap.add_argument(
        "--faster-init",
        choices=["mask", "scratch"],
        default="mask",
        help="initialise the Faster R-CNN from the trained Mask R-CNN (fine-tune) or from scratch",
    )
    ap.add_argument("--faster-lr", type=float, default=0.004, help="base lr of the Faster R-CNN fine-tune")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--clip", type=float, default=5.0, help="gradient-norm clipping (0: off)")
    ap.add_argument(
        "--mask-stop",
        type=int,
        default=None,
        help="stop the Mask R-CNN at this iteration (schedule still over --mask-iters)",
    )
    ap.add_argument(
        "--faster-stop",
        type=int,
        default=None,
        help="stop the Faster R-CNN at this iteration (schedule still over --faster-iters)",
    )
    ap.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    ap.add_argument("--roi-batch", type=int, default=256, help="ROI_HEADS.BATCH_SIZE_PER_IMAGE")
    ap.add_argument(
        "--parallel",
        action="store_true",
        help="with --model both --faster-init scratch: train the two models at once, one "
        "process and one thread each (2 cores: ~30%% more iterations per hour than "
        "one 2-thread run after the other)",
    )
    ap.add_argument(
        "--ddp",
        type=int,
        default=1,
        metavar="N",
        help="train each model data-parallel in N processes of one thread each (gloo, CPU); "
        "measured on 2 cores at the start of training: 0.61 s per batch of 4 with --ddp 2 vs "
        "1.06 s in one single-thread process",
    )
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--ckpt-every", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--crop", type=int, default=352, help="fixed training input size (pad/crop square)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop training (and still evaluate/write) when this much time has passed",
    )
    ap.add_argument("--time-iters", type=int, default=0, help="only time this many iterations, write nothing")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    own = list(argv if argv is not None else sys.argv[1:])
    if a.ddp > 1 and _env_rank() < 0:
        if a.parallel or a.time_iters:
            ap.error("--ddp cannot be combined with --parallel or --time-iters")
        return launch_ddp(a, own)
    if a.parallel and (a.model != "both" or a.faster_init != "scratch"):
        ap.error("--parallel needs --model both --faster-init scratch")
    run = start_run(a)
    if a.time_iters:
        return time_iterations(a, run)
    if a.parallel:
        return train_parallel(a, own)
    if a.model == "keypoint":
        return train_keypoint(a, run)
    if a.model == "panoptic":
        return train_panoptic(a, run)
    if a.model in ("both", "mask"):
        train_mask(a, run)
    if a.model in ("both", "faster"):
        train_faster(a, run)
    return 0


def time_iterations(a, run: Run) -> int:
    """``--time-iters N``: train N iterations of the chosen model into <work>/_timing, only to log s/iter."""
    setup_logging(None)
    kp, pan = a.model == "keypoint", a.model == "panoptic"
    work = a.figures_work if kp else a.panoptic_work if pan else a.work
    if pan:
        ensure_panoptic_data(work, a.train_images, a.test_images)
    else:
        ensure_data(work, a.train_images, a.test_images, make_figures if kp else make_shapes)
    tmp = os.path.join(work, "_timing")
    os.makedirs(tmp, exist_ok=True)
    cfg = build_cfg(not kp, a, keypoint_on=kp, panoptic_on=pan)
    train(cfg, dataclasses.replace(run, log_every=10), a.time_iters, tmp, {"train": []})
    return 0


def train_parallel(a, own: list[str]) -> int:
    """``--parallel``: the Mask and the Faster R-CNN from scratch at once, one process of one thread each."""
    setup_logging(None)
    ensure_data(a.work, a.train_images, a.test_images)  # once, before the two processes read it
    own = [x for x in own if x != "--parallel"]
    procs = []
    for which in ("mask", "faster"):
        cmd = _self_cmd([*own, "--model", which, "--threads", "1"])
        LOG.info(f"starting: {' '.join(cmd[1:])}")
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
    rcs = [p.wait() for p in procs]
    LOG.info(f"both done: exit codes {rcs}; logs in {a.out}/*/train_log.txt")
    return max(rcs)


def _two_phase_init(path: str | None) -> str:
    """The model card's "init" of a model trained from scratch, maybe continued from ``path``."""
    if not path:
        return "scratch"
    return (
        "scratch, in two phases: this run continued the weights of an earlier one "
        f"({os.path.basename(path)}) with a fresh schedule"
    )


def _start_model_log(out_dir: str, what: str, init: str | None) -> dict | None:
    """Log this run to ``out_dir/train_log.txt`` (appended when continuing) and say what it trains;
    the state dict of ``init`` (an earlier phase of the same training) when continuing from it."""
    _setup_rank_logging(os.path.join(out_dir, "train_log.txt"), append=bool(init))
    state = None
    if init:
        state = torch.load(init, map_location="cpu", weights_only=True)["model"]
        LOG.info(
            f"d2ov demo model: {what}, CONTINUED from {init} (sha256 {sha256_file(init)[:16]}..., an earlier "
            f"phase of this training from scratch) with a fresh schedule; argv {sys.argv[1:]}"
        )
    else:
        LOG.info(f"d2ov demo model: {what}, trained from scratch; argv {sys.argv[1:]}")
    LOG.info(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    return state


def train_keypoint(a, run: Run) -> int:
    """``--model keypoint``: the Keypoint R-CNN on the stick figures (maybe continuing --keypoint-init)."""
    kp_dir = os.path.join(a.out, "keypoint_rcnn_figures")
    os.makedirs(kp_dir, exist_ok=True)
    init_state = _start_model_log(kp_dir, "Keypoint R-CNN on synthetic stick figures", a.keypoint_init)
    paths = ensure_data(a.figures_work, a.train_images, a.test_images, make_figures)
    cfg = build_cfg(False, a, keypoint_on=True)
    metrics = {"model": "demo/keypoint_rcnn_figures", "train": []}
    model, done, minutes = train(
        cfg, run, a.keypoint_iters, kp_dir, metrics, init_state=init_state, stop=a.keypoint_stop
    )
    if _dist()[0] == 0:
        finish_model(
            cfg,
            model,
            kp_dir,
            "demo/keypoint_rcnn_figures",
            "keypoints",
            metrics,
            done,
            minutes,
            paths["test"],
            a.test_images,
            {"init": _two_phase_init(a.keypoint_init)},
        )
        copy_samples(a.figures_work, paths["test"], SAMPLES_DIR, prefix="figures")
    return 0


def train_mask(a, run: Run) -> None:
    """The Mask R-CNN on the shapes, from scratch, into <out>/mask_rcnn_shapes."""
    mask_dir = os.path.join(a.out, "mask_rcnn_shapes")
    os.makedirs(mask_dir, exist_ok=True)
    _setup_rank_logging(os.path.join(mask_dir, "train_log.txt"))
    LOG.info(f"d2ov demo model: Mask R-CNN on synthetic shapes, trained from scratch; argv {sys.argv[1:]}")
    LOG.info(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    paths = ensure_data(a.work, a.train_images, a.test_images)
    cfg = build_cfg(True, a)
    metrics = {"model": "demo/mask_rcnn_shapes", "train": []}
    model, done, minutes = train(cfg, run, a.mask_iters, mask_dir, metrics, stop=a.mask_stop)
    if _dist()[0] == 0:
        finish_model(
            cfg,
            model,
            mask_dir,
            "demo/mask_rcnn_shapes",
            "instance_segmentation",
            metrics,
            done,
            minutes,
            paths["test"],
            a.test_images,
            {"init": "scratch"},
        )
        copy_samples(a.work, paths["test"], SAMPLES_DIR)


def train_faster(a, run: Run) -> None:
    """The Faster R-CNN on the shapes into <out>/faster_rcnn_shapes: fine-tuned from the trained Mask
    R-CNN's weights (``--faster-init mask``: at --faster-lr, warm-up at most 50) or from scratch."""
    faster_dir = os.path.join(a.out, "faster_rcnn_shapes")
    os.makedirs(faster_dir, exist_ok=True)
    _setup_rank_logging(os.path.join(faster_dir, "train_log.txt"))
    paths = ensure_data(a.work, a.train_images, a.test_images)
    init_state = None
    cfg_args = a
    if a.faster_init == "mask":
        src = os.path.join(a.out, "mask_rcnn_shapes", "model_final.pth")
        init_state = torch.load(src, map_location="cpu", weights_only=True)["model"]
        init_state = {k: v for k, v in init_state.items() if not k.startswith("roi_heads.mask_head.")}
        LOG.info(
            "d2ov demo model: Faster R-CNN on synthetic shapes. NOT trained from scratch: it is "
            f"INITIALISED FROM THE TRAINED MASK R-CNN ({src}, sha256 {sha256_file(src)[:16]}...): its "
            "backbone, FPN, RPN and box-head weights (mask head dropped), then FINE-TUNED with "
            f"MASK_ON False for {a.faster_iters} iterations at base lr {a.faster_lr}."
        )
        cfg_args = argparse.Namespace(**{**vars(a), "lr": a.faster_lr, "warmup": min(a.warmup, 50)})
    else:
        LOG.info("d2ov demo model: Faster R-CNN on synthetic shapes, trained from scratch")
    LOG.info(f"argv {sys.argv[1:]}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    cfg = build_cfg(False, cfg_args)
    metrics = {"model": "demo/faster_rcnn_shapes", "init": a.faster_init, "train": []}
    model, done, minutes = train(
        cfg, run, a.faster_iters, faster_dir, metrics, init_state=init_state, stop=a.faster_stop
    )
    extra = {"init": "fine-tuned from demo/mask_rcnn_shapes" if a.faster_init == "mask" else "scratch"}
    if _dist()[0] == 0:
        finish_model(
            cfg,
            model,
            faster_dir,
            "demo/faster_rcnn_shapes",
            "detection",
            metrics,
            done,
            minutes,
            paths["test"],
            a.test_images,
            extra,
        )


def train_panoptic(a, run: Run) -> int:
    """``--model panoptic``: train (or continue) the PanopticFPN, evaluate box/mask AP and PQ on the
    test split, write models/demo/panoptic_fpn_shapes/, its card and the panoptic_*.jpg samples."""
    name = "demo/panoptic_fpn_shapes"
    out_dir = os.path.join(a.out, "panoptic_fpn_shapes")
    os.makedirs(out_dir, exist_ok=True)
    pred_dir = os.path.join(a.panoptic_work, "pred_test")
    gt_pan = os.path.join(a.panoptic_work, "test_panoptic.json")
    card_path = os.path.join(CARDS_DIR, "panoptic_fpn_shapes.json")
    if a.panoptic_pq_only:
        _setup_rank_logging(os.path.join(out_dir, "train_log.txt"), append=True)
        pq = panoptic_quality(gt_pan, pred_dir.rstrip("/") + ".json", pred_dir)
        mpath = os.path.join(out_dir, "metrics.json")
        with open(mpath) as f:
            metrics = json.load(f)
        metrics["panoptic"] = pq
        with open(mpath, "w") as f:
            json.dump(metrics, f, indent=1)
            f.write("\n")
        with open(card_path) as f:
            card = json.load(f)
        card.update(panoptic_card(pq))
        with open(card_path, "w") as f:
            json.dump(card, f, indent=2)
            f.write("\n")
        LOG.info(f"updated {mpath} and {card_path} with PQ")
        return 0
    init_state = _start_model_log(out_dir, "PanopticFPN on synthetic panoptic shapes", a.panoptic_init)
    paths = ensure_panoptic_data(a.panoptic_work, a.train_images, a.test_images)
    cfg = build_cfg(True, a, panoptic_on=True)
    metrics = {"model": name, "train": []}
    model, done, minutes = train(
        cfg, run, a.panoptic_iters, out_dir, metrics, init_state=init_state, stop=a.panoptic_stop
    )
    if _dist()[0] != 0:
        return 0
    writer = PanopticPredictionWriter(pred_dir)

    def card_extra(stats: dict) -> dict:
        pq = None
        try:
            pq = panoptic_quality(gt_pan, writer.save(), pred_dir)
        except Exception as e:  # keep the trained model's artefacts; --panoptic-pq-only retries
            LOG.info(f"PQ failed: {e!r}; later: --model panoptic --panoptic-pq-only")
        metrics["panoptic"] = pq
        return panoptic_card(pq)

    finish_model(
        cfg,
        model,
        out_dir,
        name,
        "panoptic_segmentation",
        metrics,
        done,
        minutes,
        paths["test"],
        a.test_images,
        {"init": _two_phase_init(a.panoptic_init), "iterations": done, "minutes": round(minutes, 1)},
        on_output=writer,
        card_extra=card_extra,
    )
    copy_samples(a.panoptic_work, paths["test"], SAMPLES_DIR, prefix="panoptic")
    return 0


def _setup_rank_logging(path: str, append: bool = False) -> None:
    """The log file is written by rank 0 only; other ranks print warnings and errors."""
    rank = _dist()[0]
    setup_logging(path if rank == 0 else None, append)
    if rank != 0:
        LOG.setLevel(logging.WARNING)


def launch_ddp(a, own: list[str]) -> int:
    """Start ``a.ddp`` copies of this script with the same arguments ``own`` (ranks 0..N-1, env
    D2OV_TRAIN_RANK, one thread each: see :func:`start_run`) and wait for them."""
    import socket

    setup_logging(None)
    if a.model == "keypoint":  # once, before the processes read it
        ensure_data(a.figures_work, a.train_images, a.test_images, make_figures)
    elif a.model == "panoptic":
        ensure_panoptic_data(a.panoptic_work, a.train_images, a.test_images)
    else:
        ensure_data(a.work, a.train_images, a.test_images)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for r in range(a.ddp):
        env = dict(
            os.environ, D2OV_TRAIN_RANK=str(r), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1"
        )
        cmd = _self_cmd(own)
        LOG.info(f"starting rank {r}: {' '.join(cmd[1:])}")
        procs.append(subprocess.Popen(cmd, env=env))
    rcs = [p.wait() for p in procs]
    LOG.info(f"all ranks done: exit codes {rcs}")
    return max(rcs)


if __name__ == "__main__":
    sys.exit(main())
