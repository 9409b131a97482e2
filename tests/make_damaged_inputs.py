#!/usr/bin/env python3
"""Writes damaged copies of a checkpoint or an IDX image file for the CLI tests (standard
library only, so the tests need no numpy).

Usage:
  make_damaged_inputs.py nan CHECKPOINT OUT TENSOR INDEX
      OUT: CHECKPOINT with element INDEX of TENSOR set to NaN, its crc32 recomputed (so only
      the value is wrong, as after a diverged run's export or a faulty writer)
  make_damaged_inputs.py format CHECKPOINT OUT TEXT
      OUT: CHECKPOINT with its "format" metadata set to TEXT
  make_damaged_inputs.py weights-only CHECKPOINT OUT
      OUT: CHECKPOINT without Adam's moments (adam.m, adam.v), as exported weights are
  make_damaged_inputs.py reshape IMAGES OUT ROWS COLS
      OUT: the IDX image file IMAGES (plain or gzip) written plain with its images declared
      ROWS x COLS (the same pixels per image in another shape)
"""
import gzip
import json
import math
import struct
import sys
import zlib


def read_checkpoint(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    return header, bytearray(blob[8 + n :])


def write_checkpoint(path, header, data):
    # Tensors keep their offsets unless the caller rebuilt them; the checksum is the data's.
    header.setdefault("__metadata__", {})["crc32"] = "%08x" % zlib.crc32(bytes(data))
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + bytes(data))


def set_nan(header, data, tensor, index):
    begin, end = header[tensor]["data_offsets"]
    at = begin + 4 * index
    if at + 4 > end:
        sys.exit(f"{tensor} has {(end - begin) // 4} elements, no element {index}")
    data[at : at + 4] = struct.pack("<f", math.nan)


def drop_adam(header, data):
    kept = sorted(
        (v["data_offsets"][0], k) for k, v in header.items() if k != "__metadata__" and not k.startswith("adam.")
    )
    out, offset = bytearray(), 0
    for _, name in kept:
        begin, end = header[name]["data_offsets"]
        out += data[begin:end]
        header[name]["data_offsets"] = [offset, offset + end - begin]
        offset += end - begin
    for name in [k for k in header if k.startswith("adam.")]:
        del header[name]
    return out


def reshape(images, out, rows, cols):
    with open(images, "rb") as f:
        blob = f.read()
    if blob[:2] == b"\x1f\x8b":
        blob = gzip.decompress(blob)
    magic, n, r, c = struct.unpack(">IIII", blob[:16])
    if r * c != rows * cols:
        sys.exit(f"{images}: {r}x{c} images cannot be {rows}x{cols}")
    with open(out, "wb") as f:
        f.write(struct.pack(">IIII", magic, n, rows, cols) + blob[16:])


def main(argv):
    if len(argv) < 4:
        sys.exit(__doc__)
    what, source, out = argv[1:4]
    if what == "reshape":
        reshape(source, out, int(argv[4]), int(argv[5]))
        return
    header, data = read_checkpoint(source)
    if what == "nan":
        set_nan(header, data, argv[4], int(argv[5]))
    elif what == "format":
        header["__metadata__"]["format"] = argv[4]
    elif what == "weights-only":
        data = drop_adam(header, data)
    else:
        sys.exit(__doc__)
    write_checkpoint(out, header, data)


if __name__ == "__main__":
    main(sys.argv)
