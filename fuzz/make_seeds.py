#!/usr/bin/env python3
"""Writes the committed seed corpus under fuzz/corpus/<target>/ (deterministic: rerunning it
gives the same bytes). Valid inputs plus a few near-valid ones per target; the input layout of
each target is described in fuzz/fuzz_targets.h."""
import gzip
import json
import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gz(data):
    return gzip.compress(data, mtime=0)


def images(n, rows, cols, seed=1):
    pixels = bytes((seed * 37 + i * 11) % 256 for i in range(n * rows * cols))
    return struct.pack(">IIII", 0x803, n, rows, cols) + pixels


def labels(values):
    return struct.pack(">II", 0x801, len(values)) + bytes(values)


def idx_input(img, lab, classes_byte=0):
    split = len(img)
    assert split < 65536
    return bytes([classes_byte, split & 0xFF, split >> 8]) + img + lab


# ---- idx: [classes byte][split, 2 bytes LE][image file][label file]
img3, lab3 = images(3, 4, 5), labels([0, 9, 4])
put("idx", "valid_3x4x5", idx_input(img3, lab3))
put("idx", "valid_mnist_2x28x28", idx_input(images(2, 28, 28), labels([7, 2])))
put("idx", "valid_gzip_both", idx_input(gz(img3), gz(lab3)))
put("idx", "valid_3_classes", idx_input(img3, labels([0, 2, 1]), 128 + 2))
put("idx", "label_out_of_range", idx_input(img3, labels([0, 10, 4])))
put("idx", "count_mismatch", idx_input(img3, labels([0, 1])))
put("idx", "truncated_images", idx_input(img3[:-3], lab3))
put("idx", "trailing_labels", idx_input(img3, lab3 + b"\x00"))
put("idx", "swapped_magic", idx_input(lab3, img3))
put("idx", "header_only", idx_input(img3[:16], lab3[:8]))

# ---- idx_gzip: [role byte: 0 images, 1 labels][gzip file]; paired with 1 image / 1 label.
one_img, one_lab = images(1, 1, 1), labels([0])
put("idx_gzip", "valid_images", b"\x00" + gz(one_img))
put("idx_gzip", "valid_labels", b"\x01" + gz(one_lab))
put("idx_gzip", "valid_images_two_members", b"\x00" + gz(one_img[:9]) + gz(one_img[9:]))
put("idx_gzip", "valid_images_empty_member", b"\x00" + gz(b"") + gz(one_img))
put("idx_gzip", "valid_images_zlib_level9", b"\x00" + gzip.compress(one_img, 9, mtime=0))
put("idx_gzip", "truncated", b"\x00" + gz(images(4, 3, 3))[:-6])
put("idx_gzip", "trailing_garbage", b"\x01" + gz(one_lab) + b"junk")
bad_crc = bytearray(gz(one_lab))
bad_crc[-8] ^= 1
put("idx_gzip", "bad_crc", b"\x01" + bytes(bad_crc))
put("idx_gzip", "valid_stored_block", b"\x00" + gzip.compress(one_img, 0, mtime=0))


# ---- svhn_mat: the whole .mat file (MAT 5: 128-byte header, then one element per variable).
def mat_sub(mtype, data, big=False):
    """A subelement: small format (type and size in one word) up to 4 bytes, as MATLAB writes."""
    e = ">" if big else "<"
    if 0 < len(data) <= 4:
        return struct.pack(e + "I", len(data) << 16 | mtype) + data + b"\0" * (4 - len(data))
    return struct.pack(e + "II", mtype, len(data)) + data + b"\0" * (-len(data) % 8)


def mat_var(name, cls, dims, mtype, data, big=False):
    """A miMATRIX element: array flags, dimensions, name, real data."""
    e = ">" if big else "<"
    body = mat_sub(6, struct.pack(e + "II", cls, 0), big)
    body += mat_sub(5, struct.pack(e + "%di" % len(dims), *dims), big)
    body += mat_sub(1, name.encode(), big) + mat_sub(mtype, data, big)
    return struct.pack(e + "II", 14, len(body)) + body


def mat_zip(element, big=False):
    z = zlib.compress(element, 6)
    return struct.pack((">" if big else "<") + "II", 15, len(z)) + z


def mat_file(elements, big=False, version=0x0100):
    text = b"MATLAB 5.0 MAT-file, fuzz seed".ljust(116) + b"\0" * 8
    return text + struct.pack((">" if big else "<") + "H", version) + \
        (b"MI" if big else b"IM") + b"".join(elements)


def svhn_x(n, rank3=False, big=False):
    pixels = bytes((7 * (i % 32) + 13 * (i // 32 % 32) + 101 * (i // 1024 % 3) + 37 * (i // 3072))
                   % 256 for i in range(3072 * n))
    return mat_var("X", 9, [32, 32, 3] if rank3 else [32, 32, 3, n], 2, pixels, big)


def svhn_y(labels, cls=6, big=False):
    if cls == 6:  # double
        data = struct.pack((">" if big else "<") + "%dd" % len(labels), *labels)
        return mat_var("y", 6, [len(labels), 1], 9, data, big)
    return mat_var("y", 9, [len(labels), 1], 2, bytes(labels), big)


x2, y2 = svhn_x(2), svhn_y([10, 3])
put("svhn_mat", "valid_zlib", mat_file([mat_zip(x2), mat_zip(y2)]))
put("svhn_mat", "valid_plain_uint8_labels", mat_file([svhn_x(1), svhn_y([7], cls=9)]))
put("svhn_mat", "valid_big_endian_zlib",
    mat_file([mat_zip(svhn_x(1, big=True), True), mat_zip(svhn_y([1], big=True), True)], True))
put("svhn_mat", "valid_rank3_compacted_y_and_extra",
    mat_file([mat_var("note", 4, [1, 3], 2, b"abc"), mat_zip(svhn_x(1, rank3=True)),
              mat_var("y", 6, [1, 1], 2, b"\x0a")]))
put("svhn_mat", "label_eleven", mat_file([mat_zip(x2), mat_zip(svhn_y([11, 3]))]))
put("svhn_mat", "count_mismatch", mat_file([mat_zip(x2), mat_zip(svhn_y([1]))]))
put("svhn_mat", "x_double", mat_file([mat_var("X", 6, [32, 32, 3, 1], 2, bytes(3072)),
                                     mat_zip(svhn_y([1]))]))
put("svhn_mat", "missing_y", mat_file([mat_zip(x2)]))
put("svhn_mat", "v73_header", mat_file([], version=0x0200))
zx = mat_zip(x2)
put("svhn_mat", "truncated_file", mat_file([zx])[:len(zx) // 2 + 128])
cut = zlib.compress(x2, 6)[:200]  # a zlib stream cut short, its element size made to match
put("svhn_mat", "truncated_stream", mat_file([struct.pack("<II", 15, len(cut)) + cut,
                                             mat_zip(y2)]))
put("svhn_mat", "struct_variable", mat_file([mat_var("s", 2, [1, 1], 2, b""), mat_zip(x2),
                                            mat_zip(y2)]))

# ---- checkpoint: the whole safetensors file, as save_checkpoint writes it.
def safetensors(tensors, metadata=None, crc=True, pad=True):
    header, data = {}, b""
    meta = dict(metadata or {})
    for name, shape, values in tensors:
        raw = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if crc:
        meta["crc32"] = "%08x" % zlib.crc32(data)
    if meta:
        header = {"__metadata__": meta, **header}
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


sample = [("encoder.0.weight", [2, 3], [1.5, -2.25, 0.0, 3e-8, 1e30, -7.0]),
          ("empty", [0], []), ("scalar", [], [42.5]), ("adam.m", [1, 1, 2], [-1.0, 1.0])]
good = safetensors(sample, {"step": "12", "format": "pt"})
put("checkpoint", "valid", good)
put("checkpoint", "valid_no_crc", safetensors(sample, {"format": "pt"}, crc=False))
put("checkpoint", "valid_no_metadata", safetensors(sample[:1], crc=False, pad=False))
put("checkpoint", "valid_empty", safetensors([]))
put("checkpoint", "truncated", good[:-5])
flipped = bytearray(good)
flipped[-3] ^= 0x40
put("checkpoint", "corrupt_data_byte", bytes(flipped))
put("checkpoint", "bad_crc_text", good.replace(b'"crc32":"', b'"crc32":"z', 1)[:len(good)])
put("checkpoint", "huge_tensor", safetensors([("w", [25000000000], [])], crc=False)
    .replace(b"[0,0]", b"[0,100000000000]"))
put("checkpoint", "overlap", safetensors([("a", [2], [1, 2]), ("b", [1], [3])], crc=False)
    .replace(b"[8,12]", b"[4,8]"))

# ---- flags: argv[1..] joined by NUL.
def argv(*args):
    return b"\x00".join(a.encode() for a in args)


put("flags", "valid_typical", argv("--epochs", "3", "--lr=0.01", "--quiet", "--data", "/tmp/x"))
put("flags", "valid_help", argv("--help"))
put("flags", "valid_switch_value", argv("--quiet=true", "--seed=18446744073709551615"))
put("flags", "repeated", argv("--epochs", "3", "--epochs=4"))
put("flags", "missing_value", argv("--lr"))
put("flags", "unknown", argv("--epoch", "3"))
put("flags", "valid_syntax_bad_numbers", argv("--lr=1e400", "--epochs=-0x10", "--m-max=nan"))
put("flags", "empty_value", argv("--epochs", "3", "--data="))
put("flags", "positional", argv("data", "--", "-x", "--=3"))

# ---- runs_csv: the whole runs.csv of reproduce, as runs_csv() writes it (each double's
# shortest round-trip text, a supervised row's q_error "nan"); rows like
# tests/cli_reproduce.cmake's.
RUNS_HEADER = ("table,labels,seed,epochs,q_error,distance_error,neural_error,benchmark_error,"
               "seconds,settings_crc32")
RUNS_HEADER_9 = RUNS_HEADER[:RUNS_HEADER.rindex(",")]  # before settings_crc32 existed


def runs(*rows, header=RUNS_HEADER, eol="\n"):
    return "".join(line + eol for line in (header,) + rows).encode()


t1 = "1,500,1,2,nan,0.1234,0.0987,0.1012,93.4567,5e0c1f2a"
t1_seed2 = "1,500,2,2,nan,0.1301,0.1011,0.0954,91.002,5e0c1f2a"
t2 = "2,100,1,10,0.2032,0.1875,0.1933,0.2411,412.5,c81d07b3"
t2_other = "2,100,1,10,0.2032,0.5,0.1933,0.2411,412.5,c81d07b3"  # one run, another error
put("runs_csv", "valid_both_tables", runs(t1, t1_seed2, t2))
put("runs_csv", "valid_before_settings_crc32",
    runs(t1.rsplit(",", 1)[0], t2.rsplit(",", 1)[0], header=RUNS_HEADER_9))
put("runs_csv", "valid_empty", b"")
put("runs_csv", "valid_header_only", runs())
put("runs_csv", "valid_one_run_twice", runs(t2, t2))
put("runs_csv", "valid_number_spellings",
    runs("1,9223372036854775807,100,100000,-nan,-0,1e-320,1.,0.0,5e0c1f2a",
         "2,0001,07,1,.5,1,0.99999999,2.2250738585072014e-308,1e300,00000000"))
put("runs_csv", "valid_no_final_newline", runs(t1)[:-1])
# Each row alone is valid, so the reader loads the file; check_no_conflicting_rows refuses it.
put("runs_csv", "valid_syntax_conflicting_rows", runs(t2, t2_other))
put("runs_csv", "bad_number", runs(t2.replace("0.1875", "0.18.75")))
put("runs_csv", "error_out_of_range", runs(t2.replace("0.1875", "-5")))
put("runs_csv", "error_huge", runs(t2.replace("0.1933", "1e300")))
put("runs_csv", "seed_out_of_range", runs(t1.replace(",1,2,", ",101,2,")))
put("runs_csv", "epochs_zero", runs(t2.replace(",10,", ",0,")))
put("runs_csv", "labels_overflow", runs(t2.replace("2,100,", "2,9223372036854775808,")))
put("runs_csv", "seconds_inf", runs(t2.replace("412.5", "inf")))
put("runs_csv", "table2_without_q_error", runs(t2.replace("0.2032", "nan")))
put("runs_csv", "table_three", runs(t1, "3" + t2[1:]))
put("runs_csv", "missing_column", runs(t1, t2.rsplit(",", 1)[0]))
put("runs_csv", "extra_column", runs(t2 + ",7"))
put("runs_csv", "ten_columns_under_nine", runs(t2, header=RUNS_HEADER_9))
put("runs_csv", "crc_uppercase", runs(t2.replace("c81d07b3", "C81D07B3")))
put("runs_csv", "blank_line", runs(t1, "", t2))
put("runs_csv", "crlf", runs(t1, t2, eol="\r\n"))
put("runs_csv", "nul_byte", runs(t1.replace("0.1234", "0.12\x0034")))
put("runs_csv", "other_header", runs(t1, header="table,labels,seed,epochs"))
