"""``d2ov space``: build the Hugging Face Space folder and upload it (or only write it)."""

from __future__ import annotations

from ..errors import InputError


def register(sub) -> None:
    p = sub.add_parser("space", help="publish the web app as a Hugging Face Space (or write its folder)")
    p.add_argument("--repo-id", help="the Space, USER/NAME (needs a Hub token: `hf auth login` or HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="create the Space as private")
    p.add_argument("--dry-run", metavar="DIR", help="write the Space folder to DIR (new or empty) and upload nothing")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..serve.space import MAX_FILE_MB, build_space, publish_space

    if args.dry_run:
        folder = build_space(args.dry_run, progress=not args.quiet)
        files = [p for p in folder.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        print(f"wrote the Space folder {folder}: {len(files)} files, {size / 1e6:.1f} MB "
              f"(largest {max(p.stat().st_size for p in files) / 1e6:.1f} MB, limit {MAX_FILE_MB} MB)")
        return 0
    if not args.repo_id:
        raise InputError("give --repo-id USER/NAME to publish, or --dry-run DIR to only write the folder")
    url = publish_space(args.repo_id, private=args.private, progress=not args.quiet)
    print(f"published {url} (the Space builds and starts on its own; its logs are on the Space's page)")
    return 0
