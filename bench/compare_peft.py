#!/usr/bin/env python3
"""lowrank against transformers + PEFT on the same model, CPU, training steps.

For each workload (GPT-2 124M shape: 12 layers, 12 heads, n_embd 768, vocab 50257, batch 4 x 256 tokens;
the small GPT: 4 layers, 4 heads, n_embd 256, vocab 96, batch 8 x 256; the Llama family: qwen2.5-0.5b, the
Qwen2.5-0.5B shape (24 layers, hidden 896, 14 query and 2 key/value heads, MLP 4864, vocab 151936, tied
embeddings, q/k/v biases) with random weights, batch 4 x 256), each mode (LoRA r 8, alpha 16 on the
attention input projection: c_attn for GPT-2, q_proj and v_proj for the Llama family; full fine-tuning)
and each thread count (1 and every core):

1. transformers writes a randomly initialised model (dropout 0, the context length = the sequence length)
   with save_pretrained, and for LoRA PEFT writes its freshly initialised adapter (A from PEFT's init,
   B = 0) - once per workload, shared by both sides;
2. lowrank (bench/gpt_step --model DIR --adapter DIR) and transformers + PEFT (a child process of the
   given Python) each load those files, train on the same tokens (ids[i] = (7i + 3) mod V, targets
   (7i + 10) mod V, cross-entropy without shift, AdamW lr 1e-3) and report the first step's loss, then
   the minimum and median wall time of --steps steps after --warmup steps, and the peak resident set
   (VmHWM; each side in its own process);
3. the two first-step losses must agree (relative 1e-4, float32) or the workload is reported as a
   mismatch and not timed further.

Effective GFLOP/s is the model's GEMM work per step (forward, plus dX in backward; plus dW in full mode:
2·F or 3·F with F = the forward's matrix products, attention counted as full T x T) over the step time,
against the fp32 FMA peak that bench/fma_peak measures on this machine at the same thread count.

The GEMM floor (unless --no-floor): bench/gpt_step --gemm-floor records every matrix product of one of its
training steps and times that list on its own through raw BLIS (bli_sgemm, BLIS's default context) and
through lowrank::gemm; the PyTorch worker times the same list with torch.mm / addmm / bmm (MKL in PyPI's
torch) at the same thread count. "step / floor" is each side's step over its own library's floor: how much
of the step is not GEMM time; "BLIS / torch floor" is how much faster the same products run in PyTorch.

    python3 bench/compare_peft.py --gpt-binary build/bench/gpt_step --fma-binary build/bench/fma_peak \\
        [--python /path/to/venv/bin/python | --venv DIR] [--workloads gpt2-124m,small] [--modes lora,full]
        [--threads 1,all] [--steps 3] [--warmup 1] [--unfused] [--no-floor] [--json]

--python names an interpreter that has torch, transformers and peft; --venv DIR creates DIR (python3 -m
venv) and pip-installs them there when it lacks them. Neither is a dependency of the build or tests.
--unfused also runs lowrank with the unfused kernels (--head-chunk 1e18 --attention materialized), the
"before" of the fused LM head and flash attention.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

WORKLOADS = {
    "gpt2-124m": dict(family="gpt2", n_layer=12, n_head=12, n_embd=768, vocab_size=50257, seq=256, batch=4),
    "small": dict(family="gpt2", n_layer=4, n_head=4, n_embd=256, vocab_size=96, seq=256, batch=8),
    "qwen2.5-0.5b": dict(family="qwen2", n_layer=24, n_head=14, n_kv_head=2, n_embd=896, intermediate=4864, vocab_size=151936,
                         seq=256, batch=4),
}
RANK, ALPHA, LR = 8, 16, 1e-3


# ---- helpers shared by both sides ---------------------------------------------------------------------
def tokens(batch, seq, vocab):
    n = batch * seq
    return [(7 * i + 3) % vocab for i in range(n)], [(7 * i + 10) % vocab for i in range(n)]


def peak_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def forward_flops(w):
    """Matrix-product flops of one forward pass (attention as full T x T products)."""
    n, e, t = w["batch"] * w["seq"], w["n_embd"], w["seq"]
    if w["family"] == "gpt2":
        per_layer = 2 * n * e * (3 * e + e + 4 * e + 4 * e) + 2 * 2 * w["batch"] * t * t * e
    else:  # q, k, v, o projections (grouped key/value heads), gate, up and down
        kv = e // w["n_head"] * w["n_kv_head"]
        per_layer = 2 * n * (e * (e + 2 * kv + e) + 3 * e * w["intermediate"]) + 2 * 2 * w["batch"] * t * t * e
    return w["n_layer"] * per_layer + 2 * n * e * w["vocab_size"]


def step_flops(w, mode):
    return (2 if mode == "lora" else 3) * forward_flops(w)


# ---- the transformers + PEFT side (runs in the torch interpreter) ---------------------------------------
def worker_make(args):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    w = WORKLOADS[args.workload]
    torch.manual_seed(1234)
    if w["family"] != "gpt2":
        return worker_make_qwen2(args, w)
    config = GPT2Config(n_layer=w["n_layer"], n_head=w["n_head"], n_embd=w["n_embd"], vocab_size=w["vocab_size"],
                        n_positions=w["seq"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        activation_function="gelu_new", tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(os.path.join(args.dir, "model"), safe_serialization=True)
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(4321)
    peft_model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=["c_attn"], lora_dropout=0.0,
                                                  fan_in_fan_out=True, bias="none", task_type="CAUSAL_LM"))
    peft_model.save_pretrained(os.path.join(args.dir, "adapter"))


def worker_make_qwen2(args, w):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from peft import LoraConfig, get_peft_model

    config = Qwen2Config(hidden_size=w["n_embd"], intermediate_size=w["intermediate"], num_hidden_layers=w["n_layer"],
                         num_attention_heads=w["n_head"], num_key_value_heads=w["n_kv_head"], vocab_size=w["vocab_size"],
                         max_position_embeddings=w["seq"], rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                         attention_dropout=0.0, bos_token_id=0, eos_token_id=0)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(os.path.join(args.dir, "model"), safe_serialization=True)
    torch.manual_seed(4321)
    peft_model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                                                  bias="none", task_type="CAUSAL_LM"))
    peft_model.save_pretrained(os.path.join(args.dir, "adapter"))


def worker_floor(args):
    """Times bench/gpt_step's recorded GEMM list (JSON lines) with torch at --worker-threads threads."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(7)
    shapes = [json.loads(line) for line in open(args.gemm_list) if line.strip()]
    operands = {}

    def matrix(batch, rows, cols, transposed):
        stored = (cols, rows) if transposed else (rows, cols)
        t = torch.rand((batch, *stored) if batch > 1 else stored) * 2 - 1
        return t.transpose(-2, -1) if transposed else t

    calls = []
    for g in shapes:
        key = (g["batch"], g["m"], g["n"], g["k"], g["a_transposed"], g["b_transposed"])
        if key not in operands:
            b = g["batch"]
            c = torch.rand((b, g["m"], g["n"]) if b > 1 else (g["m"], g["n"])) * 2 - 1
            operands[key] = (matrix(b, g["m"], g["k"], g["a_transposed"]), matrix(b, g["k"], g["n"], g["b_transposed"]), c)
        a, b, c = operands[key]
        if g["batch"] > 1:
            calls.append((lambda a=a, b=b, c=c: c.baddbmm_(a, b)) if g["accumulate"] else (lambda a=a, b=b, c=c: torch.bmm(a, b, out=c)))
        else:
            calls.append((lambda a=a, b=b, c=c: c.addmm_(a, b)) if g["accumulate"] else (lambda a=a, b=b, c=c: torch.mm(a, b, out=c)))
    best = float("inf")
    with torch.no_grad():
        for p in range(4):
            t0 = time.perf_counter()
            for call in calls:
                call()
            if p > 0:
                best = min(best, time.perf_counter() - t0)
    print(json.dumps(dict(floor_ms=1e3 * best, calls=len(calls))))


def worker_train(args):
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    w = WORKLOADS[args.workload]
    model = AutoModelForCausalLM.from_pretrained(os.path.join(args.dir, "model"), attn_implementation="sdpa", dtype=torch.float32)
    if args.mode == "lora":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, os.path.join(args.dir, "adapter"), is_trainable=True)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=LR)
    ids, targets = tokens(w["batch"], w["seq"], w["vocab_size"])
    ids = torch.tensor(ids).view(w["batch"], w["seq"])
    targets = torch.tensor(targets).view(-1)
    rss_before = peak_rss()

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=ids).logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets)
        loss.backward()
        opt.step()
        return loss.item()

    first = step()
    for _ in range(args.warmup - 1):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    rss = peak_rss()
    print(json.dumps(dict(ms=1e3 * times[0], median_ms=1e3 * times[len(times) // 2], first_loss=first, peak_rss_bytes=rss,
                          rss_growth_bytes=rss - rss_before, trainable=sum(p.numel() for p in trainable),
                          torch=torch.__version__)))


# ---- the driver -------------------------------------------------------------------------------------
def ensure_python(args):
    if args.python:
        return args.python
    venv = args.venv or os.path.join(tempfile.gettempdir(), "lowrank-peft-venv")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    if subprocess.run([python, "-c", "import torch, transformers, peft, safetensors"], capture_output=True).returncode != 0:
        subprocess.run([python, "-m", "pip", "install", "torch", "transformers", "peft", "safetensors"], check=True)
    return python


def thread_env(threads):
    return dict(os.environ, OMP_NUM_THREADS=str(threads), BLIS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def last_json(text, who):
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    sys.exit(f"compare_peft: {who} printed no JSON line:\n{text}")


def run_peft(python, directory, workload, mode, threads, args):
    cmd = [python, os.path.abspath(__file__), "--worker", "train", "--dir", directory, "--workload", workload, "--mode", mode,
           "--worker-threads", str(threads), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    out = subprocess.run(cmd, env=thread_env(threads), check=True, capture_output=True, text=True).stdout
    return last_json(out, "the transformers + PEFT worker")


def run_torch_floor(python, gemm_list, threads):
    cmd = [python, os.path.abspath(__file__), "--worker", "floor", "--gemm-list", gemm_list, "--worker-threads", str(threads)]
    out = subprocess.run(cmd, env=thread_env(threads), check=True, capture_output=True, text=True).stdout
    return last_json(out, "the PyTorch GEMM-floor worker")


def run_lowrank(binary, directory, workload, mode, threads, args, unfused, gemm_list=None):
    w = WORKLOADS[workload]
    cmd = [binary, "--model", os.path.join(directory, "model"), "--mode", mode, "--batch", str(w["batch"]),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if mode == "lora":
        cmd += ["--adapter", os.path.join(directory, "adapter")]
    if unfused:
        cmd += ["--head-chunk", "1e18", "--attention", "materialized"]
    if args.recompute:
        cmd += ["--recompute", "on"]
    if gemm_list:
        cmd += ["--gemm-floor", gemm_list]
    out = subprocess.run(cmd, env=thread_env(threads), check=True, capture_output=True, text=True).stdout
    return last_json(out, binary)


def fma_peak(binary, threads):
    out = subprocess.run([binary, "--seconds", "0.5"], env=thread_env(threads), check=True, capture_output=True, text=True).stdout
    row = last_json(out, binary)
    return row["gflops_all"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpt-binary", default="build/bench/gpt_step")
    p.add_argument("--fma-binary", default="build/bench/fma_peak")
    p.add_argument("--python")
    p.add_argument("--venv")
    p.add_argument("--workloads", default="gpt2-124m,small")
    p.add_argument("--modes", default="lora,full")
    p.add_argument("--threads", default="1,all")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--unfused", action="store_true")
    p.add_argument("--recompute", action="store_true", help="lowrank trains with activation checkpointing (--recompute on)")
    p.add_argument("--no-floor", action="store_true", help="skip the GEMM-floor measurement")
    p.add_argument("--json", action="store_true")
    # worker mode (internal)
    p.add_argument("--worker", choices=["make", "train", "floor"])
    p.add_argument("--gemm-list")
    p.add_argument("--dir")
    p.add_argument("--workload")
    p.add_argument("--mode")
    p.add_argument("--worker-threads", type=int, dest="threads_one")
    args = p.parse_args()
    if args.steps < 1 or args.warmup < 1:
        sys.exit("compare_peft: --steps and --warmup must be >= 1 (the first warm-up step gives the loss checked)")
    if args.worker == "make":
        return worker_make(args)
    if args.worker == "train":
        args.threads = args.threads_one
        return worker_train(args)
    if args.worker == "floor":
        args.threads = args.threads_one
        return worker_floor(args)

    python = ensure_python(args)
    cores = os.cpu_count() or 1
    thread_counts = sorted({cores if t == "all" else int(t) for t in args.threads.split(",")})
    with open("/proc/loadavg") as f:
        load = " / ".join(f.read().split()[:3])
    print(f"compare_peft: {cores} cores, load average {load} (1/5/15 min) at the start")
    peaks = {t: fma_peak(args.fma_binary, t) for t in thread_counts}
    print("fp32 FMA peak: " + ", ".join(f"{peaks[t]:.1f} GFLOP/s on {t} thread(s)" for t in thread_counts))
    rows = []
    with tempfile.TemporaryDirectory(prefix="compare_peft.") as tmp:
        for workload in args.workloads.split(","):
            w = WORKLOADS[workload]
            directory = os.path.join(tmp, workload)
            os.makedirs(directory)
            subprocess.run([python, os.path.abspath(__file__), "--worker", "make", "--dir", directory, "--workload", workload],
                           check=True, capture_output=True, text=True)
            for mode in args.modes.split(","):
                for threads in thread_counts:
                    variants = [("lowrank", False)] + ([("lowrank unfused", True)] if args.unfused else [])
                    peft = run_peft(python, directory, workload, mode, threads, args)
                    for name, unfused in variants:
                        gemm_list = None if args.no_floor or unfused else os.path.join(directory, f"gemms-{mode}-{threads}.jsonl")
                        ours = run_lowrank(args.gpt_binary, directory, workload, mode, threads, args, unfused, gemm_list)
                        torch_floor = run_torch_floor(python, gemm_list, threads) if gemm_list else None
                        agree = abs(ours["first_loss"] - peft["first_loss"]) <= 1e-4 * abs(peft["first_loss"])
                        flops = step_flops(w, mode)
                        row = dict(workload=workload, mode=mode, threads=threads, variant=name,
                                   tokens=w["batch"] * w["seq"], loss_lowrank=ours["first_loss"],
                                   loss_peft=peft["first_loss"], losses_agree=agree, lowrank_ms=ours["ms"],
                                   peft_ms=peft["ms"], ratio=ours["ms"] / peft["ms"],
                                   lowrank_tokens_per_s=w["batch"] * w["seq"] / ours["ms"] * 1e3,
                                   peft_tokens_per_s=w["batch"] * w["seq"] / peft["ms"] * 1e3,
                                   lowrank_rss=ours["peak_rss_bytes"], peft_rss=peft["peak_rss_bytes"],
                                   rss_ratio=ours["peak_rss_bytes"] / peft["peak_rss_bytes"],
                                   step_gflop=flops * 1e-9, lowrank_gflops=flops / ours["ms"] * 1e-6,
                                   peft_gflops=flops / peft["ms"] * 1e-6, fma_peak_gflops=peaks[threads],
                                   recompute=args.recompute)
                        if torch_floor:
                            row.update(floor_gflop=ours["gemm_floor_flops"] * 1e-9, floor_calls=ours["gemm_floor_calls"],
                                       floor_blis_ms=ours["gemm_floor_blis_ms"], floor_lowrank_ms=ours["gemm_floor_lowrank_ms"],
                                       floor_torch_ms=torch_floor["floor_ms"],
                                       lowrank_step_over_floor=ours["ms"] / ours["gemm_floor_blis_ms"],
                                       peft_step_over_floor=peft["ms"] / torch_floor["floor_ms"],
                                       blis_over_torch_floor=ours["gemm_floor_blis_ms"] / torch_floor["floor_ms"])
                        if not agree:
                            print(f"MISMATCH {workload} {mode}: first-step loss lowrank {ours['first_loss']:.7g} vs "
                                  f"PEFT {peft['first_loss']:.7g}", file=sys.stderr)
                        rows.append(row)
                        print(f"  {workload} {mode} {threads}t {name}: {row['lowrank_ms']:.1f} ms vs {row['peft_ms']:.1f} ms",
                              file=sys.stderr)
                        if args.json:  # as soon as measured: a long run that is stopped keeps its rows
                            print(json.dumps(dict(bench="compare_peft", **row)), flush=True)
    header = ("| workload | mode | threads | lowrank ms | PEFT ms | lowrank / PEFT | tokens/s (lowrank, PEFT) | "
              "peak RSS MiB (lowrank, PEFT, ratio) | GFLOP/s (lowrank, PEFT) | % of FMA peak (lowrank, PEFT) | first loss |")
    print(header)
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        mib = 1 << 20
        print(f"| {r['workload']} | {r['mode']}{' (unfused)' if r['variant'] != 'lowrank' else ''} | {r['threads']} | "
              f"{r['lowrank_ms']:.1f} | {r['peft_ms']:.1f} | {r['ratio']:.3f} | "
              f"{r['lowrank_tokens_per_s']:.0f}, {r['peft_tokens_per_s']:.0f} | "
              f"{r['lowrank_rss'] / mib:.0f}, {r['peft_rss'] / mib:.0f}, {r['rss_ratio']:.2f} | "
              f"{r['lowrank_gflops']:.1f}, {r['peft_gflops']:.1f} | "
              f"{100 * r['lowrank_gflops'] / r['fma_peak_gflops']:.0f}%, {100 * r['peft_gflops'] / r['fma_peak_gflops']:.0f}% | "
              f"{r['loss_lowrank']:.6f} vs {r['loss_peft']:.6f}{'' if r['losses_agree'] else ' MISMATCH'} |")
    floors = [r for r in rows if "floor_blis_ms" in r]
    if floors:
        print()
        print("| workload | mode | threads | GEMM calls, GFLOP | floor ms: raw BLIS, lowrank::gemm, torch | "
              "step / floor: lowrank (raw BLIS), PEFT (torch) | BLIS / torch floor |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for r in floors:
            print(f"| {r['workload']} | {r['mode']} | {r['threads']} | {r['floor_calls']}, {r['floor_gflop']:.1f} | "
                  f"{r['floor_blis_ms']:.1f}, {r['floor_lowrank_ms']:.1f}, {r['floor_torch_ms']:.1f} | "
                  f"{r['lowrank_step_over_floor']:.2f}, {r['peft_step_over_floor']:.2f} | {r['blis_over_torch_floor']:.2f} |")
    with open("/proc/loadavg") as f:
        print(f"load average at the end: {' / '.join(f.read().split()[:3])}")
    return 0 if all(r["losses_agree"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
