"""``fsar app``: the recogniser as a local web page (optional extra: ``pip install -e ".[app]"``).

    fsar app [--data DIR | --demo] [--checkpoint RUN_DIR | --method M --backbone B] [--port 7860]
"""

from __future__ import annotations

import argparse

from fsar.cli import CLIError

ORDER = 32

EPILOG = """\
The page lists the actions of the support set, adds one from a few uploaded clips (or a
whole folder of actions, or the demo's synthetic set), recognises an uploaded or
webcam-recorded query clip, and shows the ranked actions, the "none of these" verdict and
the explanation picture (query and best-matching support frames, the metric's alignment,
per-class scores).

It listens on 127.0.0.1 (this machine only) unless --host says otherwise, accepts only video
files up to --max-upload-mb, and writes only inside --workdir (uploads, explanation
pictures, the encoded-clip cache).

examples:
  fsar app --demo
  fsar app --data my_actions/ --checkpoint fsar-demo/run --reject auto
"""


def add_parser(subparsers) -> None:
    from fsar.app import DEFAULT_MAX_UPLOAD_MB
    from fsar.cli._args import (
        add_command,
        add_device,
        add_method_option_flag,
        add_methods_own_options,
        add_sampling,
    )

    parser = add_command(
        subparsers, "app", help="a local web page: add actions, recognise clips, see why",
        description="Serve the few-shot recogniser as a local web page.", epilog=EPILOG,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    parser.add_argument("--workdir", default="fsar-app", metavar="DIR",
                        help="working folder for uploads, pictures and the clip cache (default ./fsar-app)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--data", dest="data", metavar="ROOT",
                       help="start with ROOT/<action>/<clip> as the support set")
    start.add_argument("--demo", action="store_true", help="start with the demo's synthetic actions")
    parser.add_argument("--checkpoint", metavar="RUN_DIR", help="run directory of `fsar train` (or its best.json)")
    parser.add_argument("--method", help="method without --checkpoint (default otam)")
    parser.add_argument("--backbone", help="backbone without --checkpoint (default effnet-lite0+minilm)")
    parser.add_argument("--weights", metavar="W", help="backbone weights (folder, hub id, 'random')")
    add_method_option_flag(parser)
    add_sampling(parser)
    parser.add_argument("--reject", default="auto", metavar="off|auto|P",
                        help="'none of these' below this top probability (default auto: from the support set)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                        help=f"largest accepted upload (default {DEFAULT_MAX_UPLOAD_MB})")
    add_device(parser)
    add_methods_own_options(parser)
    parser.set_defaults(func=run)


def build_state(args: argparse.Namespace):
    """The app's state (recogniser + working folder) from the command line; CLIError on bad input."""
    from pathlib import Path

    from fsar.app import AppError, AppState
    from fsar.cli._args import method_args_from, method_options_dict, resolve_device
    from fsar.recognizer import Recognizer, RecognizerError, build_recognizer_method, parse_reject, support_folder

    if args.max_upload_mb <= 0:
        raise CLIError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    device = resolve_device(args.device)
    try:
        reject = parse_reject(args.reject)
        workdir = Path(args.workdir)
        support = support_folder(args.data) if args.data else None
        method, info = build_recognizer_method(
            method=args.method, backbone=args.backbone, checkpoint=args.checkpoint, weights=args.weights,
            method_options=method_options_dict(args) or None, method_args=method_args_from(args),
            class_names=list(support) if support else None,
        )
        saved_frames, saved_size = info.pop("num_frames", None), info.pop("image_size", None)
        frames = args.num_frames or saved_frames or 8
        image_size = args.image_size or saved_size
        recognizer = Recognizer.from_method(method, support, num_frames=frames, image_size=image_size,
                                            cache_dir=workdir / "cache", reject=reject, device=device, info=info)
        state = AppState(recognizer, workdir, max_upload_bytes=int(args.max_upload_mb * (1 << 20)))
        if args.demo:
            state.load_demo()
    except (RecognizerError, AppError) as error:
        raise CLIError(str(error)) from None
    return state


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as error:
        raise CLIError(f"fsar app needs the optional [app] extra ({error.name} is missing): "
                       "pip install -e \".[app]\"") from None
    from fsar.app import create_app

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this address can use the page")
    state = build_state(args)
    app = create_app(state)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    # print the address once the socket is bound (port 0 picks a free one)
    original_startup = server.startup

    async def startup(sockets=None):
        await original_startup(sockets=sockets)
        for listener in getattr(server, "servers", []):
            for sock in listener.sockets:
                host, port = sock.getsockname()[:2]
                print(f"fsar app: http://{host}:{port}/  (working folder {state.workdir}; Ctrl-C stops)", flush=True)

    server.startup = startup
    server.run()
    return 0
