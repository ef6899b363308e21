#!/usr/bin/env python3
"""lowrank against PyTorch (CPU) on the LoRA workloads of bench/lora_step, in one session.

Runs the lowrank binary (bench/lora_step) with the thread count given here, reads its JSON lines,
runs the same workloads in PyTorch with torch.set_num_threads at that count, and prints lowrank/PyTorch
time ratios (below 1: lowrank is faster). Then the GPT workload (4 layers, 4 heads, d 256, context 256,
batch 8, vocab 96; LoRA r 8 on q and v against full fine-tuning): lowrank's bench/gpt_step and the same
model in PyTorch, each mode of each in its own process so that the peak resident set is that workload's
alone, at the same thread count and clock (step time, tokens/s, peak RSS and its growth while training).

The PyTorch LoRA linear is written out with PEFT's formula,
    y = x @ W.T + b + s * (dropout(x) @ A.T) @ B.T,   s = alpha / r,
W and b frozen, AdamW on A and B; full fine-tuning trains W. Timing: warm-up runs, then the minimum
and median wall time of --repeats runs, as bench/lora_step does.

    python3 bench/compare_pytorch.py --binary build/bench/lora_step [--gpt-binary build/bench/gpt_step]
                                     [--threads N] [--repeats N] [--clock wall|cpu] [--skip-gpt] [--json]
Exits 0 with a message when torch is not installed.
"""
import argparse
import json
import os
import subprocess
import sys
import time


CLOCK = time.perf_counter  # --clock cpu: time.process_time, as bench/lora_step --clock cpu


def timed(run, warmup, repeats):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        run()
        times.append((CLOCK() - t0) * 1e3)
    times.sort()
    return times[0], times[len(times) // 2]


def thread_env(threads):
    return dict(os.environ, OMP_NUM_THREADS=str(threads), BLIS_NUM_THREADS=str(threads))


def run_lowrank(binary, threads, repeats, warmup, clock):
    env = thread_env(threads)
    out = subprocess.run([binary, "--repeats", str(repeats), "--warmup", str(warmup), "--clock", clock], env=env, check=True,
                         capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rows[row["name"]] = row
    if not rows:
        sys.exit(f"compare_pytorch: {binary} printed no JSON rows:\n{out}")
    return rows, out


# ---- the LoRA linear layer in PyTorch ------------------------------------------------------------------
def linear_rows(torch, tokens, width, rank, alpha, repeats, warmup):
    F = torch.nn.functional
    g = torch.Generator().manual_seed(11)
    bound = width ** -0.5
    x = torch.rand(tokens, width, generator=g) * 2 - 1
    target = torch.rand(tokens, width, generator=g) * 2 - 1
    w = (torch.rand(width, width, generator=g) * 2 - 1) * bound
    b = (torch.rand(width, generator=g) * 2 - 1) * bound
    s = alpha / rank
    rows = {}

    def lora_step(p, x_grad):
        a = torch.nn.Parameter((torch.rand(rank, width, generator=g) * 2 - 1) * bound)
        bb = torch.nn.Parameter(torch.zeros(width, rank))
        opt = torch.optim.AdamW([a, bb], lr=1e-4, weight_decay=0.01)
        xin = x.clone().requires_grad_(x_grad)

        def step():
            y = F.linear(xin, w, b) + s * F.linear(F.linear(F.dropout(xin, p, training=True), a), bb)
            F.mse_loss(y, target).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            xin.grad = None
        return timed(step, warmup, repeats)

    rows["lora_step_p0"] = lora_step(0.0, False)
    rows["lora_step_p0.1"] = lora_step(0.1, False)
    rows["lora_step_dx_p0"] = lora_step(0.0, True)

    wp = torch.nn.Parameter(w.clone())
    opt = torch.optim.AdamW([wp], lr=1e-4, weight_decay=0.01)

    def full_step():
        F.mse_loss(F.linear(x, wp, b), target).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    rows["full_step"] = timed(full_step, warmup, repeats)

    x1 = torch.rand(1, width, generator=g) * 2 - 1
    a = (torch.rand(rank, width, generator=g) * 2 - 1) * bound
    bb = (torch.rand(width, rank, generator=g) * 2 - 1) * bound
    merged = w + s * bb @ a
    with torch.inference_mode():
        rows["infer_base"] = timed(lambda: F.linear(x1, w, b), warmup * 100, repeats * 100)
        rows["infer_unmerged"] = timed(lambda: F.linear(x1, w, b) + s * F.linear(F.linear(x1, a), bb), warmup * 100,
                                       repeats * 100)
        rows["infer_merged"] = timed(lambda: F.linear(x1, merged, b), warmup * 100, repeats * 100)
    return rows


# ---- GPT ------------------------------------------------------------------------------------------------
GPT = dict(layers=4, heads=4, d=256, context=256, batch=8, vocab=96, rank=8, alpha=16.0)


def run_lowrank_gpt(binary, mode, threads, repeats, warmup, clock):
    """bench/gpt_step for one mode in its own process; returns its JSON row."""
    c = GPT
    args = [binary, "--mode", mode, "--steps", str(repeats), "--warmup", str(warmup), "--clock", clock,
            "--layers", str(c["layers"]), "--heads", str(c["heads"]), "--embd", str(c["d"]), "--ctx", str(c["context"]),
            "--batch", str(c["batch"]), "--vocab", str(c["vocab"]), "--rank", str(c["rank"]), "--targets", "q,v"]
    out = subprocess.run(args, env=thread_env(threads), check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if len(rows) != 1:
        sys.exit(f"compare_pytorch: {binary} --mode {mode} printed {len(rows)} JSON rows:\n{out}")
    return rows[0]


def peak_rss_bytes():
    """VmHWM of /proc/self/status: the peak resident set of this process image. (ru_maxrss survives
    execve, so a child started by this torch-loaded parent would report the parent's peak.)"""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def gpt_child(mode, threads, repeats, warmup):
    """Runs in its own process so that the peak resident set is this workload's high-water mark."""
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nn, F = torch.nn, torch.nn.functional
    c = GPT

    class LoRALinear(nn.Module):
        def __init__(self, base):
            super().__init__()
            self.base = base
            self.lora_A = nn.Parameter(torch.empty(c["rank"], base.in_features).uniform_(-base.in_features ** -0.5,
                                                                                          base.in_features ** -0.5))
            self.lora_B = nn.Parameter(torch.zeros(base.out_features, c["rank"]))
            self.s = c["alpha"] / c["rank"]

        def forward(self, x):
            return self.base(x) + self.s * F.linear(F.linear(x, self.lora_A), self.lora_B)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            d = c["d"]
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            bsz, t, d = x.shape
            h = self.ln1(x)
            split = lambda z: z.view(bsz, t, c["heads"], d // c["heads"]).transpose(1, 2)
            att = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)), is_causal=True)
            x = x + self.o(att.transpose(1, 2).reshape(bsz, t, d))
            return x + self.down(F.gelu(self.up(self.ln2(x)), approximate="tanh"))  # GPT-2's gelu_new

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(c["vocab"], c["d"])
            self.pos = nn.Embedding(c["context"], c["d"])
            self.blocks = nn.ModuleList(Block() for _ in range(c["layers"]))
            self.ln = nn.LayerNorm(c["d"])
            self.head = nn.Linear(c["d"], c["vocab"])

        def forward(self, idx):
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.ln(x))

    model = Model()
    if mode == "lora":
        for p in model.parameters():
            p.requires_grad_(False)
        for blk in model.blocks:
            blk.q, blk.v = LoRALinear(blk.q), LoRALinear(blk.v)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    idx = torch.randint(0, c["vocab"], (c["batch"], c["context"]))
    targets = torch.randint(0, c["vocab"], (c["batch"], c["context"]))
    rss_before = peak_rss_bytes()

    def step():
        logits = model(idx)
        F.cross_entropy(logits.view(-1, c["vocab"]), targets.view(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    best, median = timed(step, warmup, repeats)
    rss_peak = peak_rss_bytes()
    tokens = c["batch"] * c["context"]
    print(json.dumps({"name": f"gpt_{mode}", "ms": best, "median_ms": median, "tokens_per_s": tokens / best * 1e3,
                      "trainable": sum(p.numel() for p in params), "peak_rss_bytes": rss_peak,
                      "rss_growth_bytes": rss_peak - rss_before}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="build/bench/lora_step")
    parser.add_argument("--gpt-binary", help="lowrank's bench/gpt_step (default: next to --binary)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: process CPU time, repeatable on a busy machine with one thread")
    parser.add_argument("--skip-gpt", action="store_true")
    parser.add_argument("--json", action="store_true", help="also print every row as a JSON line")
    parser.add_argument("--gpt-child", choices=["lora", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1 or args.threads < 1:
        sys.exit(f"compare_pytorch: --repeats {args.repeats} and --threads {args.threads} must be >= 1")

    global CLOCK
    if args.clock == "cpu":
        CLOCK = time.process_time
    try:
        import torch
    except ImportError:
        print("compare_pytorch: PyTorch is not installed (pip install torch); nothing compared")
        return 0
    if args.gpt_child:
        gpt_child(args.gpt_child, args.threads, args.repeats, args.warmup)
        return 0

    torch.set_num_threads(args.threads)
    print(f"{args.clock} clock, threads {args.threads} (lowrank: OMP_NUM_THREADS; PyTorch {torch.__version__}: set_num_threads), "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}, {time.strftime('%Y-%m-%d %H:%M')}")
    lowrank, lowrank_text = run_lowrank(args.binary, args.threads, args.repeats, args.warmup, args.clock)
    print(lowrank_text.split("\n{")[0].rstrip())
    tokens = lowrank["lora_step_p0"]["tokens"]
    ours = linear_rows(torch, tokens, 768, 8, 16.0, args.repeats, args.warmup)

    print(f"\n{'row':18} {'lowrank ms':>11} {'PyTorch ms':>11} {'PT median':>10} {'lowrank/PyTorch':>16}")
    out_rows = []
    for name, (best, median) in ours.items():
        mine = lowrank[name]["ms"]
        print(f"{name:18} {mine:11.4f} {best:11.4f} {median:10.4f} {mine / best:16.3f}")
        out_rows.append({"bench": "compare_pytorch", "name": name, "lowrank_ms": mine, "pytorch_ms": best,
                         "pytorch_median_ms": median, "lowrank_over_pytorch": mine / best, "threads": args.threads})
    print(f"PyTorch: merged/base {ours['infer_merged'][0] / ours['infer_base'][0]:.3f}, "
          f"full/LoRA step {ours['full_step'][0] / ours['lora_step_p0'][0]:.3f}")

    if not args.skip_gpt:
        gpt_binary = args.gpt_binary or os.path.join(os.path.dirname(args.binary), "gpt_step")
        gpt, mine = {}, {}
        for mode in ("lora", "full"):
            mine[mode] = run_lowrank_gpt(gpt_binary, mode, args.threads, args.repeats, args.warmup, args.clock)
            res = subprocess.run([sys.executable, __file__, "--gpt-child", mode, "--threads", str(args.threads),
                                  "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--clock", args.clock],
                                 check=True, capture_output=True, text=True).stdout
            gpt[mode] = json.loads(res.strip().splitlines()[-1])
        print(f"\nGPT ({GPT['layers']} layers, {GPT['heads']} heads, d {GPT['d']}, context {GPT['context']}, "
              f"batch {GPT['batch']}, vocab {GPT['vocab']}; LoRA r {GPT['rank']} on q, v), min of {args.repeats} steps:")
        print(f"{'row':20} {'trainable':>10} {'ms':>9} {'median':>9} {'tokens/s':>10} {'peak RSS MiB':>13} "
              f"{'RSS growth MiB':>15} {'lowrank/PyTorch':>16}")
        for mode in ("lora", "full"):
            for who, r in (("lowrank", mine[mode]), ("PyTorch", gpt[mode])):
                ratio = f"{mine[mode]['ms'] / gpt[mode]['ms']:16.3f}" if who == "lowrank" else ""
                print(f"{'gpt_' + mode + ' ' + who:20} {r['trainable']:10d} {r['ms']:9.2f} {r['median_ms']:9.2f} "
                      f"{r['tokens_per_s']:10.0f} {r['peak_rss_bytes'] / 2**20:13.1f} {r['rss_growth_bytes'] / 2**20:15.1f} {ratio}")
            out_rows.append(dict(gpt[mode], bench="compare_pytorch", name=f"gpt_{mode}_pytorch", threads=args.threads))
            out_rows.append(dict(mine[mode], bench="compare_pytorch", name=f"gpt_{mode}_lowrank", threads=args.threads,
                                 lowrank_over_pytorch=mine[mode]["ms"] / gpt[mode]["ms"]))
        print(f"full/LoRA step time: lowrank {mine['full']['ms'] / mine['lora']['ms']:.3f}, "
              f"PyTorch {gpt['full']['ms'] / gpt['lora']['ms']:.3f}; lowrank tensor peak while training: "
              f"LoRA {mine['lora']['tensor_peak_bytes'] / 2**20:.1f} MiB, full {mine['full']['tensor_peak_bytes'] / 2**20:.1f} MiB")
    print(f"load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        for r in out_rows:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
