"""Hostile layers generated at test time: a gzip'd tar of one large file of zeros (a decompression bomb)."""

from __future__ import annotations

import hashlib
import tarfile
import zlib

_CHUNK = 1 << 20


def zero_bomb(megabytes: int = 200, name: str = "zeros") -> tuple[bytes, str]:
    """A gzip'd tar holding one file of `megabytes` MiB of zeros: (the gzip bytes, the tar's diff_id).

    Streamed through zlib in 1 MiB pieces, so the uncompressed tar never sits in memory.
    """
    info = tarfile.TarInfo(name)
    info.size = megabytes * _CHUNK
    info.mode = 0o644
    header = info.tobuf(format=tarfile.PAX_FORMAT)
    trailer = b"\0" * (2 * tarfile.BLOCKSIZE)  # the file is a whole number of blocks: no padding before it
    gzip = zlib.compressobj(9, zlib.DEFLATED, 31)
    digest = hashlib.sha256()
    out = [gzip.compress(header)]
    digest.update(header)
    zeros = bytes(_CHUNK)
    for _ in range(megabytes):
        out.append(gzip.compress(zeros))
        digest.update(zeros)
    out.append(gzip.compress(trailer))
    digest.update(trailer)
    out.append(gzip.flush())
    return b"".join(out), "sha256:" + digest.hexdigest()
