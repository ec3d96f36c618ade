"""`cellblock image pull|ls|inspect|rm|prune`: the layer store on the command line.

The parsers need only argparse; the store (sandbox/imagestore.py) and skopeo's
driver (sandbox/pull.py) are imported when an image command runs, never by
`cellblock run`. Exit codes: 0 done, 1 failed (skopeo's or the store's
message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

EXIT_FAILED = 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "image",
        help="pull, list, inspect and remove OCI images (the layer store)",
        description="OCI images in cellblock's layer store: each layer unpacked once, by "
        "digest, shared by every image that has it. The store: $CELLBLOCK_STORE, else "
        "/var/lib/cellblock/store (root) or ${XDG_DATA_HOME:-~/.local/share}/cellblock/store.",
    )
    commands = p.add_subparsers(dest="image_command", required=True, metavar="COMMAND")
    pull = commands.add_parser(
        "pull",
        help="copy an image into the store (skopeo)",
        description="Pull REF: docker://NAME[:TAG|@DIGEST] (or a bare NAME[:TAG]), "
        "docker-archive:FILE[:NAME:TAG], oci:DIR[:REF], oci-archive:FILE[:REF], "
        "containers-storage:NAME[:TAG].",
        epilog="TLS is verified for every registry, localhost included; a registry that "
        "speaks plain HTTP needs --no-tls-verify.",
    )
    pull.add_argument("ref", help="the image to pull")
    pull.add_argument("--name", help="a NAME[:TAG] for the image (archives and layouts)")
    pull.add_argument(
        "--tls-verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="require HTTPS with a verified certificate (default: yes)",
    )
    ls = commands.add_parser("ls", help="list the images in the store")
    ls.add_argument("--json", action="store_true", help="print a JSON list of image records")
    inspect = commands.add_parser("inspect", help="print one image as JSON")
    inspect.add_argument("ref", help="NAME[:TAG], NAME@sha256:DIGEST or sha256:ID (or 12+ hex)")
    rm = commands.add_parser(
        "rm", help="remove an image's name (the image goes with its last name)"
    )
    rm.add_argument("refs", nargs="+", metavar="ref", help="NAME[:TAG], NAME@DIGEST or an id")
    commands.add_parser("prune", help="remove unnamed images, unused layers and stale pulls")


def main(args: argparse.Namespace) -> int:
    from sandbox.imagestore import ImageError, LayerStore

    store = LayerStore()
    try:
        return _COMMANDS[args.image_command](store, args)
    except BrokenPipeError:
        # `cellblock image inspect X | head`: the reader left; not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ImageError, OSError) as error:
        print(f"cellblock: error: {error}", file=sys.stderr)
        return EXIT_FAILED


def _pull(store: Any, args: argparse.Namespace) -> int:
    from sandbox.pull import PullOptions, pull

    image = pull(args.ref, PullOptions(tls_verify=args.tls_verify, name=args.name), store)
    print(f"pulled {image.id} ({', '.join(image.names + image.repo_digests)})")
    return 0


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _ls(store: Any, args: argparse.Namespace) -> int:
    images = store.images()
    if args.json:
        print(json.dumps([image.to_dict() for image in images], indent=1))
        return 0
    rows = [("NAME", "ID", "LAYERS", "SIZE", "PULLED")]
    for image in images:
        for name in image.names or image.repo_digests or ("<none>",):
            rows.append(
                (name, image.short_id, str(len(image.layers)), _size(image.size), image.pulled)
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _inspect(store: Any, args: argparse.Namespace) -> int:
    image = store.resolve(args.ref)
    data = image.to_dict()
    data["layers"] = []
    for diff_id in image.layers:
        info = store.layer(diff_id)
        data["layers"].append(
            {
                "diff_id": diff_id,
                "digest": info.digest if info else None,
                "size": info.size if info else None,
                "entries": info.entries if info else None,
                "path": store.layer_dir(diff_id) if info else None,
            }
        )
    print(json.dumps(data, indent=1))
    return 0


def _rm(store: Any, args: argparse.Namespace) -> int:
    code = 0
    for ref in args.refs:
        from sandbox.imagestore import ImageError

        try:
            removed = store.remove(ref)
        except ImageError as error:
            print(f"cellblock: error: {error}", file=sys.stderr)
            code = EXIT_FAILED
            continue
        for reference in removed.untagged:
            print(f"untagged {reference}")
        if removed.deleted:
            print(f"deleted {removed.deleted}")
    return code


def _prune(store: Any, args: argparse.Namespace) -> int:
    pruned = store.prune()
    for image_id in pruned.images:
        print(f"deleted image {image_id}")
    for diff_id in pruned.layers:
        print(f"deleted layer {diff_id}")
    print(
        f"freed {_size(pruned.bytes)} ({len(pruned.layers)} layers, {len(pruned.images)} images, "
        f"{pruned.tmp} stale pulls)"
    )
    return 0


_COMMANDS = {"pull": _pull, "ls": _ls, "inspect": _inspect, "rm": _rm, "prune": _prune}
