"""Image verbs of the CLI: pull, login, logout, tag, rmi, image inspect. Parse, call the library, print."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vmpod.cli.progress import familiar, reporter
from vmpod.errors import VmpodError
from vmpod.image.manifest import Platform
from vmpod.image.pull import PullOptions, PullResult, pull
from vmpod.image.reference import Reference
from vmpod.image.store import ImageStore
from vmpod.paths import StateDir


def _tls_verify(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _pull_options(args: argparse.Namespace) -> PullOptions:
    platform = Platform.parse(args.platform) if getattr(args, "platform", None) else None
    return PullOptions(platform=platform, tls_verify=getattr(args, "tls_verify", True))


def _report(result: PullResult, out: Any) -> None:
    print(f"Digest: {result.digest}", file=out)
    status = "Downloaded newer image for" if result.updated else "Image is up to date for"
    print(f"Status: {status} {familiar(result.reference)}", file=out)


def _cmd_pull(state: StateDir, args: argparse.Namespace) -> int:
    state.ensure()
    text = args.reference
    if "@" not in text and ":" not in text.rsplit("/", 1)[-1] and not args.quiet:
        print("Using default tag: latest", file=sys.stderr)
    with reporter(args.quiet) as progress:
        result = pull(ImageStore(state), text, _pull_options(args), progress)
    if not args.quiet:
        _report(result, sys.stdout)
    print(str(result.reference))
    return 0


def pull_if_missing(state: StateDir, text: str) -> None:
    """What `vmpod run` does first, as Docker does: an image missing from the store is pulled."""
    store = ImageStore(state)
    try:
        store.lookup(text)
        return
    except VmpodError as missing:
        try:
            ref = Reference.parse(text)
        except VmpodError:
            raise missing from None
        print(f"Unable to find image '{familiar(ref)}' locally", file=sys.stderr)
    state.ensure()
    try:
        with reporter(False) as progress:
            result = pull(store, text, PullOptions(), progress)
    except VmpodError as e:
        raise VmpodError(f"no such image: {text}, and pulling it failed: {e.message}", e.hint) from None
    _report(result, sys.stderr)


def register(sub: Any) -> None:
    """Adds the image verbs to the CLI's subcommands."""
    p = sub.add_parser("pull", help="download an image from a registry")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image's name")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="which image of a multi-platform one")
    p.add_argument("--tls-verify", type=_tls_verify, default=True, metavar="BOOL", help="check HTTPS certificates")
    p.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")
    p.set_defaults(handler=_cmd_pull)
