#!/usr/bin/env python3
"""Independent reader for the engine's safetensors checkpoints.

Parses a file by the format spec (https://github.com/huggingface/safetensors#format) using only
the standard library, verifies it, and prints every tensor's name, dtype and shape:
  8-byte little-endian header length N | N bytes of JSON header | data,
  header = {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
  offsets relative to the data start, tensors tiling the data region with no gap or overlap.
If numpy and/or the `safetensors` package are importable it also cross-checks with them
(safetensors.numpy.load_file must return the same arrays bit for bit).

Usage:
  check_safetensors.py FILE                 verify FILE
  check_safetensors.py --writer BIN FILE    first run the C++ test binary BIN to write FILE
  --expect-reference                        also compare the values the C++ test writes
Exit status 0 when everything holds, 1 with a message otherwise.
"""
import argparse
import array
import json
import os
import struct
import subprocess
import sys
import zlib

DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U8": 1, "BOOL": 1}

# Must match CheckpointReference.WritesReferenceFileForPython in tests/test_checkpoint.cpp.
REFERENCE = {
    "encoder.0.weight": ([4, 5], [0.25 * i - 2.0 for i in range(20)]),
    "encoder.0.bias": ([5], [-1.0, -0.5, 0.0, 0.5, 1.0]),
    "log_sigma": ([], [3.25]),
    "empty": ([0], []),
    "cube": ([2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8]),
}
REFERENCE_ORDER = ["encoder.0.weight", "encoder.0.bias", "log_sigma", "empty", "cube"]
REFERENCE_METADATA = {"format": "pt", "step": "123", "producer": "equivae"}


class Invalid(Exception):
    pass


def no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise Invalid(f"duplicate header keys {sorted(dup)}")
    return dict(pairs)


def parse(path):
    """Returns (metadata, [(name, dtype, shape, bytes)] in data order, header_length)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise Invalid(f"file is {len(blob)} bytes, shorter than the 8-byte length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise Invalid(f"header length {n} exceeds the file ({len(blob)} bytes)")
    raw = blob[8:8 + n]
    if not raw.startswith(b"{"):
        raise Invalid("header does not start with '{'")
    if raw.rstrip(b" ") != raw.rstrip():
        raise Invalid("header padding is not spaces")
    header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicate_keys)
    if not isinstance(header, dict):
        raise Invalid("header is not a JSON object")
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise Invalid("__metadata__ must map strings to strings")

    entries = []
    for name, info in header.items():
        if set(info) != {"dtype", "shape", "data_offsets"}:
            raise Invalid(f"{name}: unexpected fields {sorted(info)}")
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPE_SIZES:
            raise Invalid(f"{name}: unknown dtype {dtype}")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise Invalid(f"{name}: bad shape {shape}")
        count = 1
        for d in shape:
            count *= d
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            raise Invalid(f"{name}: bad data_offsets {[begin, end]}")
        if end - begin != count * DTYPE_SIZES[dtype]:
            raise Invalid(f"{name}: {end - begin} bytes for shape {shape} of {dtype}")
        entries.append((begin, end, name, dtype, shape))
    # Stable sort: empty tensors sharing an offset keep their header order.
    entries.sort(key=lambda e: (e[0], e[1]))
    position = 0
    tensors = []
    for begin, end, name, dtype, shape in entries:
        if begin != position:
            raise Invalid(f"{name}: starts at {begin}, expected {position} (gap or overlap)")
        position = end
        tensors.append((name, dtype, shape, data[begin:end]))
    if position != len(data):
        raise Invalid(f"header indexes {position} data bytes but the file holds {len(data)}")
    return metadata, tensors, n


def floats(raw):
    values = array.array("f")
    values.frombytes(raw)
    if sys.byteorder != "little":
        values.byteswap()
    return list(values)


def check(path, expect_reference):
    metadata, tensors, header_length = parse(path)
    # The engine's writer records the CRC-32 of the data section; verify it independently.
    if "crc32" in metadata:
        recorded = metadata.pop("crc32")
        actual = "%08x" % zlib.crc32(b"".join(raw for _, _, _, raw in tensors))
        if recorded.lower() != actual:
            raise Invalid(f"checksum mismatch: header records crc32 {recorded}, data has {actual}")
    elif expect_reference:
        raise Invalid("no crc32 in the metadata: the engine's writer always records one")
    if (8 + header_length) % 8:
        raise Invalid(f"data starts at byte {8 + header_length}, not 8-byte aligned")
    print(f"{path}: header {header_length} bytes, {len(tensors)} tensors, metadata {metadata}")
    for name, dtype, shape, raw in tensors:
        print(f"  {name:24s} {dtype} {shape}")

    if expect_reference:
        names = [t[0] for t in tensors]
        if names != REFERENCE_ORDER:
            raise Invalid(f"tensor order {names}, expected {REFERENCE_ORDER}")
        if metadata != REFERENCE_METADATA:
            raise Invalid(f"metadata {metadata}, expected {REFERENCE_METADATA}")
        for name, dtype, shape, raw in tensors:
            want_shape, want_values = REFERENCE[name]
            if dtype != "F32" or shape != want_shape or floats(raw) != want_values:
                raise Invalid(f"{name}: {dtype} {shape} {floats(raw)} != {want_shape} {want_values}")
        print("  reference values match")

    try:
        import numpy as np
    except ImportError:
        print("  numpy not importable: skipped the numpy and safetensors cross-checks")
        return
    arrays = {name: np.frombuffer(raw, dtype="<f4").reshape(shape)
              for name, dtype, shape, raw in tensors if dtype == "F32"}
    try:
        from safetensors.numpy import load_file
    except ImportError:
        print("  safetensors not importable: skipped that cross-check")
        return
    loaded = load_file(path)
    if set(loaded) != set(arrays):
        raise Invalid(f"safetensors sees {sorted(loaded)}, we see {sorted(arrays)}")
    for name, ours in arrays.items():
        theirs = loaded[name]
        if theirs.dtype != np.float32 or theirs.shape != ours.shape:
            raise Invalid(f"{name}: safetensors gives {theirs.dtype} {theirs.shape}")
        if theirs.tobytes() != ours.tobytes():
            raise Invalid(f"{name}: safetensors data differs")
    print(f"  safetensors.numpy.load_file agrees on all {len(loaded)} tensors")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--writer", help="test_checkpoint binary that writes the reference file")
    parser.add_argument("--expect-reference", action="store_true")
    args = parser.parse_args()
    if args.writer:
        # The writer gets its own output path (not the one its gtest run uses), so this check
        # is independent of how CTest orders or parallelises tests.
        if os.path.exists(args.file):
            os.remove(args.file)
        env = dict(os.environ, EQUIVAE_SAFETENSORS_OUT=args.file)
        subprocess.run([args.writer, "--gtest_filter=CheckpointReference.WritesReferenceFileForPython"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        check(args.file, args.expect_reference)
    except (Invalid, ValueError, OSError) as e:  # json.JSONDecodeError is a ValueError
        print(f"{args.file}: INVALID: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
