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


# ---- GPT-2 directories and PEFT adapters -------------------------------------------------------
# Both targets read a directory of two files; an input is the first file, a 0x00 byte, the second.

def small_floats(n, seed):
    """n deterministic float32 values in (-0.5, 0.5)."""
    values, state = [], seed
    for _ in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        values.append(((state >> 40) / 2**24) - 0.5)
    return values


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def f32_tensors(named_shapes, seed=1, dtype="F32"):
    """name -> shape, in order; returns (entries, data) with consecutive offsets."""
    entries, data = {}, b""
    for i, (name, shape) in enumerate(named_shapes):
        count = numel(shape)
        if dtype == "F16":
            blob = struct.pack("<%de" % count, *small_floats(count, seed + i))
        else:
            blob = f32(*small_floats(count, seed + i))
        entries[name] = (dtype, shape, [len(data), len(data) + len(blob)])
        data += blob
    return entries, data


def two_files(first, second):
    first = first if isinstance(first, bytes) else first.encode("utf-8")
    return first + b"\x00" + second


TINY_GPT2 = {"vocab_size": 8, "n_positions": 4, "n_embd": 4, "n_layer": 1, "n_head": 2}


def gpt2_shapes(c, prefix=""):
    e, shapes = c["n_embd"], []
    shapes += [(prefix + "wte.weight", [c["vocab_size"], e]), (prefix + "wpe.weight", [c["n_positions"], e])]
    for i in range(c["n_layer"]):
        h = f"{prefix}h.{i}."
        shapes += [(h + "ln_1.weight", [e]), (h + "ln_1.bias", [e]), (h + "attn.c_attn.weight", [e, 3 * e]),
                   (h + "attn.c_attn.bias", [3 * e]), (h + "attn.c_proj.weight", [e, e]), (h + "attn.c_proj.bias", [e]),
                   (h + "ln_2.weight", [e]), (h + "ln_2.bias", [e]), (h + "mlp.c_fc.weight", [e, 4 * e]),
                   (h + "mlp.c_fc.bias", [4 * e]), (h + "mlp.c_proj.weight", [4 * e, e]), (h + "mlp.c_proj.bias", [e])]
    shapes += [(prefix + "ln_f.weight", [e]), (prefix + "ln_f.bias", [e])]
    return shapes


def gpt2_input(config=None, shapes=None, dtype="F32", extra=None, config_text=None):
    config = dict(TINY_GPT2 if config is None else config)
    shapes = gpt2_shapes(config) if shapes is None else shapes
    entries, data = f32_tensors(shapes + (extra or []), dtype=dtype)
    text = config_text if config_text is not None else json.dumps(dict(config, model_type="gpt2"))
    return two_files(text, safetensors(entries, data, metadata={"format": "pt"}))


def gpt2_seeds():
    t = "gpt2_checkpoint"
    write(t, "valid_tiny", gpt2_input())
    write(t, "valid_transformer_prefix_f16", gpt2_input(shapes=gpt2_shapes(TINY_GPT2, "transformer."), dtype="F16"))
    write(t, "valid_mask_buffers_n_ctx",
          gpt2_input(config_text=json.dumps({k: v for k, v in TINY_GPT2.items() if k != "n_positions"} | {"n_ctx": 4}),
                     extra=[("h.0.attn.bias", [1, 1, 4, 4]), ("h.0.attn.masked_bias", [])]))
    write(t, "bad_missing_tensor", gpt2_input(shapes=gpt2_shapes(TINY_GPT2)[:-1]))
    wrong = [(n, [5, 4] if n == "wpe.weight" else s) for n, s in gpt2_shapes(TINY_GPT2)]
    write(t, "bad_wrong_shape", gpt2_input(shapes=wrong))
    write(t, "bad_unexpected_tensor", gpt2_input(extra=[("h.1.ln_1.weight", [4])]))
    write(t, "bad_lm_head_not_tied", gpt2_input(extra=[("lm_head.weight", [8, 4])]))
    write(t, "bad_n_layer_past_the_file", gpt2_input(config_text=json.dumps(dict(TINY_GPT2, n_layer=1_000_000_000_000))))
    write(t, "bad_n_embd_overflows", gpt2_input(config_text=json.dumps(dict(TINY_GPT2, n_embd=2**62, n_head=1))))
    write(t, "bad_heads_do_not_divide", gpt2_input(config_text=json.dumps(dict(TINY_GPT2, n_head=3))))
    write(t, "bad_activation", gpt2_input(config_text=json.dumps(dict(TINY_GPT2, activation_function="relu"))))
    write(t, "bad_config_not_json", gpt2_input(config_text='{"vocab_size": 8,'))
    write(t, "bad_config_not_object", gpt2_input(config_text="[8, 4]"))
    write(t, "bad_config_missing_key", gpt2_input(config_text=json.dumps({"vocab_size": 8})))
    write(t, "bad_weights_empty", two_files(json.dumps(TINY_GPT2), b""))


# The GPT the adapter target loads onto (tests/fuzz/adapter.fuzz.cpp): n_embd 4, n_layer 2.
ADAPTER_E, ADAPTER_LAYERS = 4, 2


def peft_config(r, alpha, targets, **extra):
    config = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "lora_dropout": 0.0, "target_modules": targets,
              "use_rslora": False, "bias": "none", "fan_in_fan_out": True, "task_type": "CAUSAL_LM",
              "init_lora_weights": True}
    config.update(extra)
    return json.dumps(config)


def qv_adapter(settings=True, b_leak=False, r_file=2, shapes=None, config=None):
    """q and v adapters of rank 1 (alpha 2), as nn::save_adapter writes them: fused c_attn of rank 2."""
    e, tensors = ADAPTER_E, []
    for layer in range(ADAPTER_LAYERS):
        module = f"base_model.model.transformer.h.{layer}.attn.c_attn."
        tensors += [(module + "lora_A.weight", [r_file, e]), (module + "lora_B.weight", [3 * e, r_file])]
    if shapes is not None:
        tensors = shapes(tensors)
    entries, data = f32_tensors(tensors)
    # B's blocks: q rows [0, e) use column 0, v rows [2e, 3e) column 1; everything else must be zero.
    data = bytearray(data)
    for name, (_, shape, (begin, _end)) in entries.items():
        if name.endswith("lora_B.weight") and len(shape) == 2 and shape == [3 * e, r_file]:
            for row in range(shape[0]):
                for col in range(shape[1]):
                    inside = (row < e and col == 0) or (2 * e <= row < 3 * e and col == 1)
                    if not inside and not (b_leak and row == e and col == 0):
                        struct.pack_into("<f", data, begin + 4 * (row * shape[1] + col), 0.0)
    metadata = {"format": "pt"}
    if settings:
        metadata["lowrank.lora_settings"] = json.dumps({"targets": ["q", "v"], "rank": 1, "alpha": 2.0, "dropout": 0.0,
                                                        "scaling": "alpha/r", "init": "rank_scaled_normal"})
    text = config if config is not None else peft_config(r_file, 4.0, ["attn.c_attn"])
    return two_files(text, safetensors(entries, bytes(data), metadata=metadata))


def mlp_adapter(extra_tensor=None):
    """PEFT-style adapters of rank 2 on mlp.c_fc and mlp.c_proj, no lowrank metadata."""
    e, tensors = ADAPTER_E, []
    for layer in range(ADAPTER_LAYERS):
        for module, (fan_in, fan_out) in (("mlp.c_fc", (e, 4 * e)), ("mlp.c_proj", (4 * e, e))):
            prefix = f"base_model.model.transformer.h.{layer}.{module}."
            tensors += [(prefix + "lora_A.weight", [2, fan_in]), (prefix + "lora_B.weight", [fan_out, 2])]
    if extra_tensor:
        tensors.append(extra_tensor)
    entries, data = f32_tensors(tensors)
    return two_files(peft_config(2, 8.0, ["mlp.c_fc", "mlp.c_proj"]), safetensors(entries, data, metadata={"format": "pt"}))


def adapter_seeds():
    t = "adapter"
    write(t, "valid_qv_as_saved", qv_adapter())
    write(t, "valid_mlp_peft_without_settings", mlp_adapter())
    # Without our metadata a c_attn adapter is read as q, k and v sharing its A (nn/adapter_files.hpp).
    write(t, "valid_fused_without_settings", qv_adapter(settings=False))
    write(t, "bad_b_outside_blocks", qv_adapter(b_leak=True))
    write(t, "bad_rank_mismatch", qv_adapter(config=peft_config(3, 6.0, ["attn.c_attn"])))
    write(t, "bad_scale_mismatch", qv_adapter(config=peft_config(2, 5.0, ["attn.c_attn"])))
    write(t, "bad_wrong_shape", qv_adapter(shapes=lambda ts: [(n, [2, 5] if n.endswith("h.1.attn.c_attn.lora_A.weight") else s)
                                                               for n, s in ts]))
    write(t, "bad_missing_tensor", qv_adapter(shapes=lambda ts: ts[:-1]))
    write(t, "bad_unexpected_tensor", mlp_adapter(extra_tensor=("base_model.model.lm_head.lora_A.weight", [2, 4])))
    write(t, "bad_targets_select_nothing", qv_adapter(config=peft_config(2, 4.0, ["c_fc_typo"])))
    write(t, "bad_not_lora", qv_adapter(config=peft_config(2, 4.0, ["attn.c_attn"], peft_type="IA3")))
    write(t, "bad_dora", qv_adapter(config=peft_config(2, 4.0, ["attn.c_attn"], use_dora=True)))
    write(t, "bad_r_zero", qv_adapter(config=peft_config(0, 4.0, ["attn.c_attn"])))
    write(t, "bad_config_not_json", qv_adapter(config='{"peft_type": "LORA", '))
    write(t, "bad_weights_empty", two_files(peft_config(2, 4.0, ["attn.c_attn"]), b""))
    for name, settings in (("bad_settings_rank_too_large", {"rank": 1_000_000_000_000}),
                           ("bad_settings_unknown_target", {"targets": ["q", "x"]}),
                           ("bad_settings_rank_float", {"rank": 1e300}),
                           ("bad_settings_not_json", None)):
        seed = qv_adapter()
        meta = json.dumps({"targets": ["q", "v"], "rank": 1, "alpha": 2.0, "dropout": 0.0, "scaling": "alpha/r",
                           "init": "rank_scaled_normal"} | (settings or {}))
        write(t, name, rewrite_settings(seed, meta if settings is not None else "{not json"))


def rewrite_settings(seed, settings_text):
    """The same adapter with its "lowrank.lora_settings" metadata replaced."""
    config, weights = seed.split(b"\x00", 1)
    length = struct.unpack("<Q", weights[:8])[0]
    header = json.loads(weights[8:8 + length])
    header["__metadata__"]["lowrank.lora_settings"] = settings_text
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return two_files(config, safetensors({}, weights[8 + length:], raw_header=raw))


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


# ---- Hugging Face directories --------------------------------------------------------------------
# Parts cut at each separator line: index, generation_config.json, shard 1, shard 2 (hf_directory.fuzz.cpp).

SEPARATOR = b"\n--next-file--\n"
SHARD_1, SHARD_2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def hf_input(index, generation=b"", shard1=b"", shard2=b""):
    parts = [json.dumps(p).encode("utf-8") if isinstance(p, dict) else (p.encode("utf-8") if isinstance(p, str) else p)
             for p in (index, generation, shard1, shard2)]
    return SEPARATOR.join(parts)


def hf_shard(named_shapes, dtype="F32", seed=1):
    entries, data = f32_tensors(named_shapes, seed=seed, dtype=dtype)
    return safetensors(entries, data, metadata={"format": "pt"})


def bf16_shard(named_shapes):
    """BF16: the upper halves of the float32 values."""
    entries, data = {}, b""
    for i, (name, shape) in enumerate(named_shapes):
        values = struct.pack("<%df" % numel(shape), *small_floats(numel(shape), 7 + i))
        blob = b"".join(values[k + 2:k + 4] for k in range(0, len(values), 4))
        entries[name] = ("BF16", shape, [len(data), len(data) + len(blob)])
        data += blob
    return safetensors(entries, data)


def hf_seeds():
    t = "hf_directory"
    first, second = [("a", [2, 3]), ("b", [3])], [("c", [4])]
    index = {"metadata": {"total_size": 52}, "weight_map": {"a": SHARD_1, "b": SHARD_1, "c": SHARD_2}}
    generation = {"bos_token_id": 1, "eos_token_id": [2, 3], "temperature": 0.7, "top_p": 0.9, "top_k": 40, "do_sample": True}
    write(t, "valid_two_shards", hf_input(index, generation, hf_shard(first), hf_shard(second, seed=5)))
    write(t, "valid_bf16_f16_shards", hf_input(index, b"", bf16_shard(first), hf_shard(second, dtype="F16")))
    write(t, "valid_one_shard_no_generation",
          hf_input({"weight_map": {"a": SHARD_1, "b": SHARD_1}}, b"", hf_shard(first)))
    write(t, "listed_integer_tensor",
          hf_input({"weight_map": {"i": SHARD_1}}, b"", safetensors({"i": ("I32", [2], [0, 8])}, struct.pack("<2i", 1, 2))))
    write(t, "bad_missing_shard", hf_input(index, generation, hf_shard(first)))
    write(t, "bad_listed_but_absent",
          hf_input({"weight_map": {"a": SHARD_1, "b": SHARD_1, "c": SHARD_2, "d": SHARD_2}}, b"", hf_shard(first), hf_shard(second)))
    write(t, "bad_unlisted_tensor", hf_input({"weight_map": {"a": SHARD_1, "c": SHARD_2}}, b"", hf_shard(first), hf_shard(second)))
    write(t, "bad_tensor_in_two_shards",
          hf_input(index, b"", hf_shard(first), hf_shard(second + [("a", [1])])))
    write(t, "bad_duplicate_weight_map_key",
          hf_input('{"weight_map": {"a": "%s", "a": "%s"}}' % (SHARD_1, SHARD_2), b"", hf_shard([("a", [1])]), hf_shard([("a", [1])])))
    write(t, "bad_shard_outside_directory", hf_input({"weight_map": {"a": "../" + SHARD_1}}, b"", hf_shard(first)))
    write(t, "bad_no_weight_map", hf_input({"metadata": {}}, b"", hf_shard(first)))
    write(t, "bad_index_not_json", hf_input('{"weight_map": {"a": ', b"", hf_shard(first)))
    write(t, "bad_generation_eos_string", hf_input(index, {"eos_token_id": "2"}, hf_shard(first), hf_shard(second)))
    write(t, "bad_generation_top_p", hf_input(index, {"top_p": 2}, hf_shard(first), hf_shard(second)))
    write(t, "bad_no_weights", hf_input(b""))


# ---- Hugging Face tokenizer.json ---------------------------------------------------------------
# An input is tokenizer.json, 0x00, tokenizer_config.json, 0x00, a text to encode.

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
TOKENIZER_TEXT = "Hello  world! It's 12345 cats'LL run.\r\n\tcafe\u0301 \u65e5\u672c \U0001F44D <|eot_id|><s> \xff\n"


def byte_level_tokenizer(pattern=LLAMA3_PATTERN, normalizer=None):
    bytes_in_order, table = byte_stand_ins()
    space = table[0x20]
    learned = ["he", space + "t", "ll", "hell", space + "the"]
    vocab = {token: i for i, token in enumerate(bytes_in_order + learned)}
    merges = [["h", "e"], [space, "t"], ["l", "l"], ["he", "ll"], [space + "t", "he"]]
    specials = ["<|begin_of_text|>", "<|eot_id|>"]
    added = [{"id": len(vocab) + i, "content": s, "single_word": False, "lstrip": False, "rstrip": i == 1,
              "normalized": False, "special": True} for i, s in enumerate(specials)]
    template = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": specials[0], "type_id": 0}},
                                                         {"Sequence": {"id": "A", "type_id": 0}}],
                "special_tokens": {specials[0]: {"id": specials[0], "ids": [len(vocab)], "tokens": [specials[0]]}}}
    return {"added_tokens": added, "normalizer": normalizer,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
            "post_processor": template, "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "ignore_merges": True, "vocab": vocab, "merges": merges}}


def sentencepiece_tokenizer(metaspace=False):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in ["\u2581", "h", "e", "l", "o", "he", "ll", "\u2581he", "\u2581hell"]:
        vocab[piece] = len(vocab)
    merges = ["h e", "l l", "\u2581 he", "\u2581he ll"]
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, s in enumerate(["<unk>", "<s>", "</s>"])]
    normalizer = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                      {"type": "Replace", "pattern": {"String": " "},
                                                       "content": "\u2581"}]}
    pre = None
    if metaspace:
        normalizer, pre = None, {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True}
    return {"added_tokens": added, "normalizer": normalizer, "pre_tokenizer": pre,
            "post_processor": None,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
                {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
            "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True, "vocab": vocab,
                      "merges": merges}}


def tokenizer_input(tokenizer, config=None, text=TOKENIZER_TEXT):
    parts = [tokenizer if isinstance(tokenizer, str) else json.dumps(tokenizer, ensure_ascii=False),
             "" if config is None else json.dumps(config), text]
    return "\x00".join(parts).encode("utf-8", "surrogateescape")


def hf_tokenizer_seeds():
    t = "hf_tokenizer"
    chatml = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>"
              "system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + "
              "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}")
    llama3 = "<|start_header_id|>{{ bos_token }}<|end_header_id|><|eot_id|>"
    inst = "{{ bos_token }}[INST] <<SYS>> [/INST]{{ eos_token }}"
    write(t, "valid_llama3", tokenizer_input(byte_level_tokenizer(), {"bos_token": "<|begin_of_text|>",
                                                                       "eos_token": "<|eot_id|>", "chat_template": llama3}))
    write(t, "valid_qwen2_nfc", tokenizer_input(byte_level_tokenizer(LLAMA3_PATTERN.replace("{1,3}", ""),
                                                                     {"type": "NFC"}), {"chat_template": chatml}))
    write(t, "valid_llama2", tokenizer_input(sentencepiece_tokenizer(), {"bos_token": "<s>", "eos_token": "</s>",
                                                                         "chat_template": inst}))
    write(t, "valid_metaspace_split", tokenizer_input(sentencepiece_tokenizer(metaspace=True)))
    bad_regex = byte_level_tokenizer(pattern=r"\w+")
    write(t, "bad_unknown_regex", tokenizer_input(bad_regex))
    lowercase = sentencepiece_tokenizer()
    lowercase["normalizer"] = {"type": "Lowercase"}
    write(t, "bad_normalizer", tokenizer_input(lowercase))
    huge = sentencepiece_tokenizer()
    huge["model"]["vocab"]["<unk>"] = 2000000000
    write(t, "bad_huge_id", tokenizer_input(huge))
    write(t, "bad_unknown_template", tokenizer_input(sentencepiece_tokenizer(), {"chat_template": "{{ x }}"}))
    write(t, "bad_not_json", b'{"model": \x00\x00text')
    write(t, "bad_empty", b"")

# ---- GGUF ---------------------------------------------------------------------------------------

def gguf_string(text):
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def gguf(kvs, tensors, data, version=3, alignment=32, count_tensors=None, count_kvs=None):
    """kvs: raw (key, type, payload bytes); tensors: (name, dims, ggml type, offset)."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if count_tensors is None else count_tensors,
                                len(kvs) if count_kvs is None else count_kvs)
    for key, vtype, payload in kvs:
        out += gguf_string(key) + struct.pack("<I", vtype) + payload
    for name, dims, gtype, offset in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack("<%dQ" % len(dims), *dims)
        out += struct.pack("<IQ", gtype, offset)
    out += b"\0" * ((alignment - len(out) % alignment) % alignment)
    return out + data


def gguf_seeds():
    t = "gguf"
    six = f32(1, 2, 3, 4, 5, 6)
    arch = ("general.architecture", 8, gguf_string("gpt2"))
    write(t, "valid_f32_3x2", gguf([arch], [("w", [3, 2], 0, 0)], six))
    write(t, "valid_empty", gguf([], [], b""))
    strings = struct.pack("<IQ", 8, 2) + gguf_string("a") + gguf_string("ß")
    nested = struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 4, 2) + struct.pack("<2I", 7, 8)
    write(t, "valid_all_value_types",
          gguf([("u8", 0, b"\x07"), ("i8", 1, b"\xff"), ("u16", 2, b"\x01\x02"), ("i16", 3, b"\xff\xff"),
                ("u32", 4, struct.pack("<I", 9)), ("i32", 5, struct.pack("<i", -9)), ("f32", 6, f32(0.5)),
                ("bool", 7, b"\x01"), ("s", 8, gguf_string("x")), ("strings", 9, strings), ("nested", 9, nested),
                ("u64", 10, struct.pack("<Q", 2**63)), ("i64", 11, struct.pack("<q", -5)),
                ("f64", 12, struct.pack("<d", 2.5))], [], b""))
    halves = struct.pack("<2H", 0x3C00, 0xC000)
    q8 = struct.pack("<H", 0x3800) + bytes(range(32))
    write(t, "valid_f16_bf16_q8_0",
          gguf([], [("h", [2], 1, 0), ("b", [2], 30, 32), ("q", [32], 8, 64)],
               halves + b"\0" * 28 + halves + b"\0" * 28 + q8))
    write(t, "valid_alignment_64",
          gguf([("general.alignment", 4, struct.pack("<I", 64))], [("a", [1], 0, 0), ("b", [1], 0, 64)],
               f32(1) + b"\0" * 60 + f32(2), alignment=64))
    full = gguf([arch], [("w", [3, 2], 0, 0)], six)
    write(t, "bad_truncated", full[:-3])
    write(t, "bad_short", b"GGUF\x03")
    write(t, "bad_magic", b"GGUG" + full[4:])
    write(t, "bad_version_2", gguf([arch], [("w", [3, 2], 0, 0)], six, version=2))
    write(t, "bad_unknown_ggml_type", gguf([], [("w", [6], 2, 0)], six))
    write(t, "bad_unknown_value_type", gguf([("k", 13, b"")], [], b""))
    write(t, "bad_misaligned_offset", gguf([], [("w", [1], 0, 4)], six))
    write(t, "bad_offset_past_end", gguf([], [("w", [6], 0, 32)], six))
    write(t, "bad_overlap", gguf([], [("a", [6], 0, 0), ("b", [1], 0, 0)], six))
    write(t, "bad_duplicate_tensor", gguf([], [("a", [1], 0, 0), ("a", [1], 0, 32)], six + b"\0" * 26))
    write(t, "bad_duplicate_key", gguf([arch, arch], [], b""))
    write(t, "bad_overflowing_dims", gguf([], [("w", [2**40, 2**40], 0, 0)], six))
    write(t, "bad_zero_dims", gguf([], [("w", [], 0, 0)], six))
    write(t, "bad_huge_tensor_count", gguf([], [], b"", count_tensors=2**62))
    write(t, "bad_huge_array", gguf([("k", 9, struct.pack("<IQ", 4, 2**60))], [], b""))
    write(t, "bad_string_past_end", gguf([("k", 8, struct.pack("<Q", 2**40))], [], b""))
    write(t, "bad_non_utf8_name", gguf([], [(b"\xff", [1], 0, 0)], f32(1)))
    write(t, "bad_alignment_not_power_of_two",
          gguf([("general.alignment", 4, struct.pack("<I", 48))], [], b""))
    write(t, "bad_bool_value", gguf([("b", 7, b"\x02")], [], b""))
    write(t, "bad_q8_0_width", gguf([], [("q", [16], 8, 0)], q8))


# ---- quantized weights (tests/fuzz/quantized.fuzz.cpp) ------------------------------------------

def quantized_seeds():
    """Byte 0: format (0 q8_0, 1 nf4, 2 nf4 double-quantized, 3 bf16, 4 f16), bytes 1-2: rows, cols."""
    t = "quantized"
    q8_block = struct.pack("<H", 0x3C00) + bytes((i * 9) % 256 for i in range(32))  # d = 1, codes -128..127
    write(t, "valid_q8_0_2x32", bytes([0, 2, 32]) + q8_block + struct.pack("<H", 0x7C00) + bytes(range(32)))  # d = inf
    write(t, "valid_nf4_3x37", bytes([1, 3, 37, 2]) + f32(0.5, 3e38) + bytes((i * 37) % 256 for i in range(56)))
    write(t, "valid_nf4_double_5x64", bytes([2, 5, 64, 5, 1]) + f32(0.25) + f32(0.125) + bytes([0, 255, 127, 128, 17])
          + bytes((i * 53) % 256 for i in range(160)))
    write(t, "valid_bf16_2x3", bytes([3, 2, 3]) + struct.pack("<6H", 0x3F80, 0x7F80, 0x7FC0, 0x8000, 0x0001, 0xFF7F))
    write(t, "valid_f16_2x3", bytes([4, 2, 3]) + struct.pack("<6H", 0x3C00, 0x7C00, 0x7E01, 0x8000, 0x0001, 0x7BFF))
    write(t, "valid_empty", bytes([0, 0, 64]))
    write(t, "bad_q8_0_short", bytes([0, 2, 32]) + q8_block)
    write(t, "bad_q8_0_cols_33", bytes([0, 1, 33]) + q8_block)
    write(t, "bad_nf4_codes_short", bytes([1, 3, 37, 2]) + f32(0.5, 1.0) + bytes(55))
    write(t, "bad_nf4_absmax_count", bytes([1, 3, 37, 3]) + f32(0.5, 1.0, 2.0) + bytes(56))
    write(t, "bad_nf4_double_no_scales", bytes([2, 5, 64, 5, 0]) + f32(0.25) + bytes(5) + bytes(160))
    write(t, "bad_bf16_count", bytes([3, 2, 3]) + struct.pack("<5H", 1, 2, 3, 4, 5))


if __name__ == "__main__":
    # Inputs a fuzzer once crashed on (regression_*) are kept; everything else is written afresh.
    for target in os.listdir(CORPUS) if os.path.isdir(CORPUS) else []:
        for name in os.listdir(os.path.join(CORPUS, target)):
            if not name.startswith("regression_"):
                os.remove(os.path.join(CORPUS, target, name))
    safetensors_seeds()
    bpe_seeds()
    utf8_seeds()
    gpt2_seeds()
    adapter_seeds()
    hf_seeds()
    hf_tokenizer_seeds()
    gguf_seeds()
    quantized_seeds()
    for target in sorted(os.listdir(CORPUS)):
        print(f"{target}: {len(os.listdir(os.path.join(CORPUS, target)))} seeds")
