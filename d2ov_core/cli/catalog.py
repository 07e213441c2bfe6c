"""``d2ov list``: the model catalog."""

from __future__ import annotations

import json

from ..store import catalog

TASKS = sorted({s.task for s in catalog.CATALOG.values()})


def register(sub) -> None:
    p = sub.add_parser("list", help="list the model catalog")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--task", choices=TASKS)
    p.set_defaults(func=run)


def run(args) -> int:
    specs = [catalog.CATALOG[n] for n in catalog.names(args.task)]
    if args.json:
        print(json.dumps([s.to_dict() for s in specs], indent=1))
        return 0
    width = max(len(s.name) for s in specs)
    print(f"{'name':<{width}}  {'task':<21}  box AP  mask AP  kp AP    PQ  source")
    for s in specs:
        box = f"{s.box_ap:6.1f}" if s.box_ap is not None else "     -"
        mask = f"{s.mask_ap:7.1f}" if s.mask_ap is not None else "      -"
        kp = f"{s.keypoint_ap:5.1f}" if s.keypoint_ap is not None else "    -"
        pq = f"{s.pq:5.1f}" if s.pq is not None else "    -"
        print(f"{s.name:<{width}}  {s.task:<21}  {box}  {mask}  {kp}  {pq}  {s.source}")
    return 0
