"""``d2ov serve``: the web app (same as ``python app.py``)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the web app (same as python app.py)")
    p.add_argument("--host", help="bind address (default: GRADIO_SERVER_NAME, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: GRADIO_SERVER_PORT, else 7860)")
    p.add_argument("--share", action="store_true", help="create a public gradio.live link")
    p.add_argument("--no-mcp", action="store_true", help="do not serve /detect as an MCP tool")
    p.add_argument("--server", metavar="URL", help="also offer the models of this KServe-v2 model server")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="the model the page opens on (repeatable; also D2OV_DEFAULT_MODEL)",
    )
    p.add_argument("--examples", metavar="DIR", help="example images for those models (also D2OV_EXAMPLES)")
    p.add_argument("--title", help="the page's title (also D2OV_TITLE)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..serve.webapp import main as serve  # Gradio: loaded by this command only

    argv = (
        (["--host", args.host] if args.host else [])
        + (["--port", str(args.port)] if args.port else [])
        + (["--share"] if args.share else [])
        + (["--no-mcp"] if args.no_mcp else [])
        + (["--server", args.server] if args.server else [])
        + [a for m in args.model for a in ("--model", m)]
        + (["--examples", args.examples] if args.examples else [])
        + (["--title", args.title] if args.title else [])
    )
    serve(argv)
    return 0
