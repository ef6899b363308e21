#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets to tests/fuzz/corpus/<target>/: small valid inputs that
reach deep into each parser, and invalid ones for each class of error it reports. Deterministic; run it
again after changing it and commit the result. Files named regression_* (fuzz findings) are kept."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


# ---- safetensors -------------------------------------------------------------------------------

def safetensors(entries, data, metadata=None, raw_header=None, pad=True):
    """entries: name -> (dtype, shape, [begin, end]); returns length + header + data."""
    if raw_header is None:
        header = {}
        if metadata is not None:
            header["__metadata__"] = metadata
        for name, (dtype, shape, offsets) in entries.items():
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        raw_header = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if pad:
        raw_header += b" " * ((8 - len(raw_header) % 8) % 8)
    return struct.pack("<Q", len(raw_header)) + raw_header + data


def f32(*values):
    return struct.pack("<%df" % len(values), *values)


def safetensors_seeds():
    t = "safetensors"
    six = f32(1, 2, 3, 4, 5, 6)
    write(t, "valid_f32_2x3", safetensors({"w": ("F32", [2, 3], [0, 24])}, six))
    write(t, "valid_two_tensors_metadata",
          safetensors({"a": ("F64", [2], [0, 16]), "b": ("F32", [1, 1, 1, 2], [16, 24])},
                      struct.pack("<2d", 0.5, -2.0) + f32(7, 8), metadata={"format": "pt", "step": "3"}))
    write(t, "valid_f16_bf16_f8",
          safetensors({"h": ("F16", [2], [0, 4]), "b": ("BF16", [2], [4, 8]), "e4": ("F8_E4M3", [2], [8, 10]),
                       "e5": ("F8_E5M2", [2], [10, 12])},
                      struct.pack("<4H", 0x3C00, 0xFC00, 0x3F80, 0x7FC0) + bytes([0x38, 0x7F, 0x3C, 0x7C])))
    write(t, "valid_scalar_and_empty",
          safetensors({"s": ("F32", [], [0, 4]), "e": ("F32", [0, 5], [4, 4])}, f32(3.5)))
    write(t, "valid_empty_header", safetensors({}, b""))
    write(t, "valid_nan_inf", safetensors({"x": ("F32", [3], [0, 12])}, f32(float("nan"), float("inf"), -0.0)))
    write(t, "valid_unicode_name", safetensors({"wörter.ß": ("F32", [1], [0, 4])}, f32(1)))
    write(t, "listed_int_and_rank5",
          safetensors({"i": ("I32", [2], [0, 8]), "r": ("F32", [1, 1, 1, 1, 1], [8, 12])}, struct.pack("<2i", 1, 2) + f32(1)))
    full = safetensors({"w": ("F32", [2, 3], [0, 24])}, six)
    write(t, "bad_truncated", full[:-5])
    write(t, "bad_short", b"\x10\x00\x00")
    write(t, "bad_header_past_end", struct.pack("<Q", 4096) + b"{}")
    write(t, "bad_header_over_limit", struct.pack("<Q", 100_000_001) + b"{}      ")
    write(t, "bad_overlap", safetensors({"a": ("F32", [2], [0, 8]), "b": ("F32", [2], [4, 12])}, f32(1, 2, 3)))
    write(t, "bad_gap", safetensors({"a": ("F32", [1], [0, 4]), "b": ("F32", [1], [8, 12])}, f32(1, 2, 3)))
    write(t, "bad_unknown_dtype", safetensors({"w": ("F48", [1], [0, 4])}, f32(1)))
    write(t, "bad_shape_bytes_mismatch", safetensors({"w": ("F32", [2, 2], [0, 12])}, f32(1, 2, 3)))
    write(t, "bad_overflowing_shape",
          safetensors({"w": ("F32", [4294967296, 4294967296], [0, 4])}, f32(1)))
    write(t, "bad_negative_dim", safetensors({"w": ("F32", [-1], [0, 4])}, f32(1)))
    write(t, "bad_non_utf8_name", safetensors({}, f32(1), raw_header=b'{"w\xff":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'))
    write(t, "bad_duplicate_name",
          safetensors({}, f32(1), raw_header=b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                             b'"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'))
    write(t, "bad_not_json", safetensors({}, b"", raw_header=b'{"w": [1, 2'))
    write(t, "bad_metadata_not_string", safetensors({}, b"", metadata={"step": 3}))
    write(t, "bad_trailing_bytes", safetensors({"w": ("F32", [1], [0, 4])}, f32(1, 2)))


# ---- BPE files ---------------------------------------------------------------------------------

def byte_stand_ins():
    """GPT-2's byte -> code point table, in vocab.json order (self-standing bytes first)."""
    selfs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    others = [b for b in range(256) if b not in selfs]
    table = {b: chr(b) for b in selfs}
    for n, b in enumerate(others):
        table[b] = chr(0x100 + n)
    return [table[b] for b in selfs + others], table


def bpe_input(vocab_tokens, merges, ensure_ascii=False, merges_header=True):
    vocab = {token: i for i, token in enumerate(vocab_tokens)}
    text = json.dumps(vocab, ensure_ascii=ensure_ascii).encode("utf-8")
    merge_text = ("#version: 0.2\n" if merges_header else "") + "".join(f"{a} {b}\n" for a, b in merges)
    return text + b"\x00" + merge_text.encode("utf-8")


def bpe_seeds():
    t = "bpe_files"
    bytes_in_order, table = byte_stand_ins()
    space = table[0x20]
    merges = [("h", "e"), (space, "t"), ("l", "l"), ("he", "ll"), (space + "t", "he")]
    learned = ["he", space + "t", "ll", "hell", space + "the"]
    write(t, "valid_small", bpe_input(bytes_in_order + learned + ["<|endoftext|>"], merges))
    write(t, "valid_ascii_escaped_crlf",
          bpe_input(bytes_in_order + learned, merges, ensure_ascii=True).replace(b"\n", b"\r\n"))
    write(t, "valid_bytes_only_no_header", bpe_input(bytes_in_order, [], merges_header=False))
    write(t, "bad_missing_byte", bpe_input(bytes_in_order[:-1] + learned, merges))
    write(t, "bad_merge_unknown_token", bpe_input(bytes_in_order + learned, merges + [("x", "zz")]))
    write(t, "bad_merge_line", bpe_input(bytes_in_order + learned, merges) + b"lll\n")
    write(t, "bad_duplicate_id", bpe_input(bytes_in_order + learned, merges).replace(b'"ll": 258', b'"ll": 257'))
    write(t, "bad_id_gap", bpe_input(bytes_in_order + learned, merges).replace(b'"ll": 258', b'"ll": 900'))
    write(t, "bad_not_json", b'{"a": 0, \x00a b\n')
    write(t, "bad_not_object", b"[1, 2, 3]\x00")
    write(t, "bad_id_type", b'{"a": "zero"}\x00')
    write(t, "bad_empty", b"")


# ---- UTF-8 and pre-tokenizer ---------------------------------------------------------------------

def utf8_seeds():
    t = "utf8"
    write(t, "ascii", "Hello  world! It's 12,345 cats'll   run.\r\n\tthe end \n")
    write(t, "scripts", "café straße naïve Ελληνικά Кириллица 日本語のテキスト ٣٤٥ ⅫⅣ")
    write(t, "emoji_zwj", "👍🏽 👨\u200d👩\u200d👧 \u00a0\u2003\u3000 nbsp")
    write(t, "invalid_bytes", b"\xff\xfe stray \x80 cont, cut \xc3, overlong \xc0\xaf \xe0\x80\xaf, "
                             b"surrogate \xed\xa0\x80, past max \xf4\x90\x80\x80, \xf5\xf8\xfc")
    write(t, "special_tokens", "<|endoftext|>x<|pad|><|endoftext|<|pad|>>")
    write(t, "nul_and_controls", b"nul\x00byte \x01\x02\x1b[0m \x7f")
    write(t, "empty", b"")


if __name__ == "__main__":
    # Inputs a fuzzer once crashed on (regression_*) are kept; everything else is written afresh.
    for target in os.listdir(CORPUS) if os.path.isdir(CORPUS) else []:
        for name in os.listdir(os.path.join(CORPUS, target)):
            if not name.startswith("regression_"):
                os.remove(os.path.join(CORPUS, target, name))
    safetensors_seeds()
    bpe_seeds()
    utf8_seeds()
    for target in sorted(os.listdir(CORPUS)):
        print(f"{target}: {len(os.listdir(os.path.join(CORPUS, target)))} seeds")
