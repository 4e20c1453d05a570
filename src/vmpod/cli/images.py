"""Image verbs of the CLI: pull, push, login, logout, tag, rmi, save, load, image inspect/prune. Parse, call the
library, print."""

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
    from contextlib import AbstractContextManager

    from vmpod.image.pull import Progress, PullOptions, PullResult


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


def _push_reporter(quiet: bool) -> AbstractContextManager[Progress]:
    """Pull's reporters, worded as `docker push` words its progress."""
    from vmpod.cli.progress import Bars, Lines, reporter
    from vmpod.image.manifest import Descriptor

    class PushLines(Lines):
        def resolved(self, ref: Reference, digest: str) -> None:
            self._say(f"The push refers to repository [{ref.familiar_name}]")

        def layer(self, descriptor: Descriptor, cached: bool) -> None:
            self._say(f"{descriptor.short}: {'Layer already exists' if cached else 'Pushing'}")

        def done(self, descriptor: Descriptor) -> None:
            self._say(f"{descriptor.short}: Pushed")

    class PushBars(Bars):
        def resolved(self, ref: Reference, digest: str) -> None:
            self.bars.console.print(f"The push refers to repository [{ref.familiar_name}]")

        def layer(self, descriptor: Descriptor, cached: bool) -> None:
            super().layer(descriptor, cached)
            state = "Layer already exists" if cached else "Pushing"
            self.bars.update(self.tasks[descriptor.digest], description=f"{descriptor.short}: {state}")

        def done(self, descriptor: Descriptor) -> None:
            self.bars.update(self.tasks[descriptor.digest], description=f"{descriptor.short}: Pushed")

    chosen = reporter(quiet)
    if isinstance(chosen, Bars):
        return PushBars(chosen.out)
    if isinstance(chosen, Lines):
        return PushLines(chosen.out)
    return chosen


def _cmd_push(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.image.push import push

    with _push_reporter(args.quiet) as progress:
        result = push(ImageStore(state), args.reference, args.tls_verify, progress)
    if args.quiet:
        print(str(result.reference))
    else:
        print(f"{result.reference.tag}: digest: {result.digest} size: {result.size}")
    return 0


def _cmd_save(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.image.save import save

    output = args.output or "-"
    if output == "-" and sys.stdout.isatty():
        raise VmpodError("cowardly refusing to save to a terminal", "use the -o flag or redirect")
    sys.stdout.flush()
    save(ImageStore(state), args.images, output, sys.stdout.buffer)
    return 0


def _cmd_load(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.image.load import load

    source = args.input or "-"
    if source == "-" and sys.stdin.isatty():
        raise VmpodError("requested load from stdin, but stdin is a terminal", "use -i FILE or redirect")
    state.ensure()
    for image in load(ImageStore(state), source):
        for name in image.names:
            print(f"Loaded image: {Reference.parse(name).familiar}")
        if not image.names:
            print(f"Loaded image ID: {image.id}")
    return 0


def _cmd_image_prune(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.cli.sizes import human_size
    from vmpod.container.state import ContainerStore
    from vmpod.image.load import UNNAMED
    from vmpod.image.remove import prune
    from vmpod.rootfs.disk import remove_base_disk

    if not args.force:
        which = "all images without at least one container associated to them" if args.all else "all dangling images"
        print(f"WARNING! This will remove {which}.\nAre you sure you want to continue? [y/N] ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    in_use = {record.image_id: record.id for record in ContainerStore(state).all()}
    pruned = prune(ImageStore(state), args.all, in_use)
    removal = pruned.removal
    if removal.deleted:
        print("Deleted Images:")
        for name in removal.untagged:
            if not name.startswith(UNNAMED + "@"):
                print(f"untagged: {Reference.parse(name).familiar}")
        for image_id in removal.deleted:
            remove_base_disk(state, image_id)
            print(f"deleted: {image_id}")
        print()
    print(f"Total reclaimed space: {human_size(pruned.reclaimed)}")
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
    p = image.add_parser("prune", help="remove unnamed images (-a: every image no container uses), unused blobs")
    p.add_argument("-a", "--all", action="store_true", help="remove every image no container uses")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=_cmd_image_prune)

    p = sub.add_parser("push", help="upload an image to a registry")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image's name")
    p.add_argument("--tls-verify", type=_tls_verify, default=True, metavar="BOOL", help="check HTTPS certificates")
    p.add_argument("reference", metavar="NAME[:TAG]")
    p.set_defaults(handler=_cmd_push)

    p = sub.add_parser("save", help="write images to a tar archive (docker save and OCI layout)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE rather than stdout")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(handler=_cmd_save)

    p = sub.add_parser("load", help="read images from a docker save or OCI archive, or an OCI layout directory")
    p.add_argument("-i", "--input", metavar="FILE", help="read from FILE (or a directory) rather than stdin")
    p.set_defaults(handler=_cmd_load)

    p = sub.add_parser("logout", help="forget the credentials of a registry")
    p.add_argument("registry", nargs="?", metavar="REGISTRY", help="default: Docker Hub")
    p.set_defaults(handler=_cmd_logout)
