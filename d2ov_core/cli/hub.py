"""``d2ov push``: publish an IR to the Hugging Face Hub in the layout the app fetches."""

from __future__ import annotations

from pathlib import Path

from ..export.resolve import resolve_ir
from ..store import hub


def register(sub) -> None:
    p = sub.add_parser("push", help="publish an IR to the Hugging Face Hub in the layout the app fetches")
    p.add_argument("model", help="catalog name (its bundled or cached IR) or an IR .xml/folder")
    p.add_argument("--repo-id", required=True, help="Hub repository, e.g. you/detectron2-openvino")
    p.add_argument("--revision", help="branch to push to, created if it does not exist (default: main)")
    p.add_argument("--dry-run", metavar="DIR", help="write the repository tree to DIR instead of uploading")
    p.set_defaults(func=run)


def run(args) -> int:
    xml = resolve_ir(args.model)
    sub = hub.push_ir(
        xml, args.repo_id, revision=args.revision, dry_run_dir=Path(args.dry_run) if args.dry_run else None
    )
    if args.dry_run:
        where = args.dry_run
    else:
        from huggingface_hub import constants

        # the Hub it went to (HF_ENDPOINT may name another than huggingface.co)
        where = f"{constants.ENDPOINT}/{args.repo_id}" + (f"/tree/{args.revision}" if args.revision else "")
    print(f"pushed {xml.parent} to {where} as {sub}/")
    return 0
