"""Image verbs of the CLI: pull, login, logout, tag, rmi, image inspect. Parse, call the library, print."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import TYPE_CHECKING, Any

from vmpod.errors import VmpodError
from vmpod.image.reference import Reference
from vmpod.image.store import ImageStore
from vmpod.paths import StateDir

# The registry client (httpx) and progress bars (rich) are imported by the verbs that use them, so
# that `vmpod run` of an image already here does not pay for them at start-up.
if TYPE_CHECKING:
    from vmpod.image.pull import PullOptions, PullResult


def _tls_verify(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _pull_options(args: argparse.Namespace) -> PullOptions:
    from vmpod.image.manifest import Platform
    from vmpod.image.pull import PullOptions

    platform = Platform.parse(args.platform) if getattr(args, "platform", None) else None
    return PullOptions(platform=platform, tls_verify=getattr(args, "tls_verify", True))


def _report(result: PullResult, out: Any) -> None:
    from vmpod.cli.progress import familiar

    print(f"Digest: {result.digest}", file=out)
    status = "Downloaded newer image for" if result.updated else "Image is up to date for"
    print(f"Status: {status} {familiar(result.reference)}", file=out)


def _cmd_pull(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.cli.progress import reporter
    from vmpod.image.pull import pull

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
        from vmpod.cli.progress import familiar, reporter
        from vmpod.image.pull import PullOptions, pull

        print(f"Unable to find image '{familiar(ref)}' locally", file=sys.stderr)
    state.ensure()
    try:
        with reporter(False) as progress:
            result = pull(store, text, PullOptions(), progress)
    except VmpodError as e:
        raise VmpodError(f"no such image: {text}, and pulling it failed: {e.message}", e.hint) from None
    _report(result, sys.stderr)


def _cmd_login(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.image.credentials import Credentials
    from vmpod.image.login import login, registry_domain

    registry = registry_domain(args.registry)
    username = args.username
    password = args.password
    if password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    if args.password_stdin:
        if password is not None:
            raise VmpodError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.readline().rstrip("\r\n")
    interactive = sys.stdin.isatty()
    if not username and interactive:
        username = input("Username: ").strip()
    if password is None and interactive:
        password = getpass.getpass("Password: ")
    if not username or not password:
        raise VmpodError("a user name and a password are needed to log in", "use -u USER and --password-stdin")
    path = login(registry, Credentials(username, password), args.tls_verify)
    print(f"WARNING! Your password is stored unencrypted in {path}.", file=sys.stderr)
    print("Login Succeeded")
    return 0


def _cmd_logout(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.image.login import logout, registry_domain

    registry = registry_domain(args.registry)
    if logout(registry):
        print(f"Removing login credentials for {registry}")
    else:
        print(f"Not logged in to {registry}")
    return 0


def _cmd_tag(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.image.remove import tag

    tag(ImageStore(state), args.source, args.target)
    return 0


def _cmd_rmi(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container.state import ContainerStore
    from vmpod.image.remove import remove_image
    from vmpod.rootfs.disk import remove_base_disk

    store = ImageStore(state)
    in_use = {record.image_id: record.id for record in ContainerStore(state).all()}
    failed = 0
    for text in args.images:
        try:
            removal = remove_image(store, text, args.force, in_use)
        except VmpodError as e:
            print(f"vmpod: error: {e}", file=sys.stderr)
            failed = 1
            continue
        for name in removal.untagged:
            print(f"Untagged: {name}")
        for image_id in removal.deleted:
            if image_id not in in_use:
                remove_base_disk(state, image_id)
            print(f"Deleted: {image_id}")
    return failed


def _cmd_image_inspect(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.image.inspect import inspect

    store = ImageStore(state)
    found = [inspect(store, store.lookup(text)) for text in args.images]
    print(json.dumps(found, indent=4))
    return 0


def register(sub: Any) -> None:
    """Adds the image verbs to the CLI's subcommands."""
    p = sub.add_parser("pull", help="download an image from a registry")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image's name")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="which image of a multi-platform one")
    p.add_argument("--tls-verify", type=_tls_verify, default=True, metavar="BOOL", help="check HTTPS certificates")
    p.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")
    p.set_defaults(handler=_cmd_pull)

    p = sub.add_parser("login", help="log in to a registry (credentials kept in a Docker config.json)")
    p.add_argument("-u", "--username", help="user name")
    p.add_argument("-p", "--password", help="password (insecure: prefer --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--tls-verify", type=_tls_verify, default=True, metavar="BOOL", help="check HTTPS certificates")
    p.add_argument("registry", nargs="?", metavar="REGISTRY", help="default: Docker Hub")
    p.set_defaults(handler=_cmd_login)

    p = sub.add_parser("tag", help="give an image another name")
    p.add_argument("source", metavar="SOURCE_IMAGE")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    p.set_defaults(handler=_cmd_tag)

    p = sub.add_parser("rmi", help="remove images (names; blobs no other image needs)")
    p.add_argument("-f", "--force", action="store_true", help="remove names in several repositories, or in use")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(handler=_cmd_rmi)

    image = sub.add_parser("image", help="manage images").add_subparsers(dest="image_verb", metavar="COMMAND")
    image.required = True
    p = image.add_parser("inspect", help="show an image's details as JSON")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(handler=_cmd_image_inspect)

    p = sub.add_parser("logout", help="forget the credentials of a registry")
    p.add_argument("registry", nargs="?", metavar="REGISTRY", help="default: Docker Hub")
    p.set_defaults(handler=_cmd_logout)
