#!/usr/bin/env python3
"""Seeds the fuzz corpora from the wire format's test vectors (run from anywhere).

Writes every `hex:` of wire-format/vectors/{valid,invalid,auth}.txt to corpus/datagram/, and
of vectors/link.txt to corpus/link_frames/ (each frame alone, plus all valid frames of each
direction back to back). libFuzzer starts from these instead of from nothing, so it reaches
accepted datagrams and frames at once. The corpora are not committed (see .gitignore).
"""

import pathlib
import re

FUZZ = pathlib.Path(__file__).resolve().parent
VECTORS = FUZZ.parent / "wire-format" / "vectors"


def blocks(path):
    """Yields (name, fields) per block; continuation lines are joined with a space."""
    block, last = None, None
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0] in " \t" and block is not None and last is not None:
            block[last] += " " + line.strip()
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "name":
            if block is not None:
                yield block["name"], block
            block = {}
        block[key] = value
        last = key
    if block is not None:
        yield block["name"], block


def hex_bytes(text):
    return bytes.fromhex(re.sub(r"\s+", "", text))


def write(target, name, data):
    out = FUZZ / "corpus" / target
    out.mkdir(parents=True, exist_ok=True)
    (out / f"seed-{name}").write_bytes(data)


def main():
    count = 0
    for file in ("valid.txt", "invalid.txt", "auth.txt"):
        path = VECTORS / file
        if not path.exists():
            continue
        for name, b in blocks(path):
            write("datagram", name, hex_bytes(b.get("hex", "")))
            count += 1
    streams = {"client": b"", "server": b""}
    for name, b in blocks(VECTORS / "link.txt"):
        data = hex_bytes(b.get("hex", ""))
        write("link_frames", name, data)
        count += 1
        if "error" not in b:
            streams[b.get("dir", "client")] += data
    for direction, data in streams.items():
        write("link_frames", f"all-valid-{direction}", data)
        count += 1
    print(f"wrote {count} seeds under {FUZZ / 'corpus'}")


if __name__ == "__main__":
    main()
