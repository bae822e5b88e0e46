#!/usr/bin/env python3
"""PyTorch peers on the very same masks: FlexAttention (BlockMask.from_kv_blocks over the Flex-layout
files attention_bench wrote) and SDPA dense flash attention, B=1, bf16, causal. Also measures the
GPU's bf16 matrix rate. Merges its medians with attention_bench.csv into a markdown table.

usage: flex_bench.py --masks DIR [--out DIR] [--reps 10] [--heads 32] [--dim 128] [--block 128]
Runs on the GPU host only (PyTorch is not a dependency of the product)."""
import argparse
import csv
import glob
import os
import re
import statistics

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import BlockMask, flex_attention


def time_ms(fn, warmup, reps):
    """Median of `reps` CUDA-event timings after `warmup` calls (the same method as the C++ side)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def block_mask_from_files(num_path, idx_path, n, block, device):
    """Diagonal blocks go in as partial (mask_mod applied), every other kept block as full: the
    cheapest form FlexAttention accepts for a causal block-sparse mask."""
    num = np.load(num_path)  # [1, H, M]
    idx = np.load(idx_path)  # [1, H, M, max_k], each row ascending, padded with 0
    _, h, m = num.shape
    rows = np.arange(m)
    last = np.take_along_axis(idx, (num - 1)[..., None].clip(min=0), axis=-1)[..., 0]
    assert (num >= 1).all() and (last == rows[None, None, :]).all(), "every row must keep its diagonal block"
    full_idx = np.zeros((1, h, m, m), dtype=np.int32)
    full_idx[..., : idx.shape[-1]] = idx
    part_idx = np.zeros((1, h, m, m), dtype=np.int32)
    part_idx[..., 0] = rows
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)
    return BlockMask.from_kv_blocks(
        t(np.ones_like(num)), t(part_idx), t(num - 1), t(full_idx), BLOCK_SIZE=block, mask_mod=causal, seq_lengths=(n, n))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--masks", required=True)
    ap.add_argument("--out", default=".")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--block", type=int, default=128)
    args = ap.parse_args()
    dev = "cuda"
    torch.manual_seed(0)
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)

    a = torch.rand(8192, 8192, device=dev, dtype=torch.bfloat16) * 2 - 1
    b = torch.rand(8192, 8192, device=dev, dtype=torch.bfloat16) * 2 - 1
    mm_ms = time_ms(lambda: a @ b, 5, 20)
    mm_tflops = 2 * 8192**3 / (mm_ms * 1e-3) / 1e12
    print(f"bf16 matmul 8192^3: {mm_ms:.3f} ms = {mm_tflops:.0f} TFLOP/s", flush=True)
    del a, b

    flex = torch.compile(flex_attention, dynamic=False)
    files = sorted(glob.glob(os.path.join(args.masks, "flex_n*_s*_num.npy")))
    by_n = {}
    for f in files:
        n, s = re.search(r"flex_n(\d+)_s([0-9.]+)_num\.npy", f).groups()
        by_n.setdefault(int(n), []).append((float(s), f, f.replace("_num.npy", "_idx.npy")))
    rows = []
    for n in sorted(by_n):
        shape = (1, args.heads, n, args.dim)
        q, k, v = (torch.rand(shape, device=dev, dtype=torch.bfloat16) * 2 - 1 for _ in range(3))
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            sdpa_ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), 2, args.reps)
        print(f"N={n} SDPA flash causal: {sdpa_ms:.3f} ms", flush=True)
        for s, num_path, idx_path in sorted(by_n[n]):
            bm = block_mask_from_files(num_path, idx_path, n, args.block, dev)
            flex_ms = time_ms(lambda: flex(q, k, v, block_mask=bm), 3, args.reps)
            print(f"N={n} s={s:.2f} FlexAttention: {flex_ms:.3f} ms", flush=True)
            rows.append({"n": n, "sparsity": s, "flex_ms": flex_ms, "sdpa_ms": sdpa_ms})
            del bm
        del q, k, v
        torch.cuda.empty_cache()
    with open(os.path.join(args.out, "flex_bench.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["n", "sparsity", "flex_ms", "sdpa_ms"])
        w.writeheader()
        w.writerows(rows)

    ours = {}
    ours_path = os.path.join(args.masks, "attention_bench.csv")
    if os.path.exists(ours_path):
        for r in csv.DictReader(open(ours_path)):
            ours[(int(r["n"]), round(float(r["sparsity"]), 2))] = r
    d, bs = args.dim, args.block
    lines = [
        f"GPU: {torch.cuda.get_device_name(0)}; measured bf16 matmul (8192^3): {mm_tflops:.0f} TFLOP/s. "
        f"B=1, H={args.heads}, D={d}, bf16, causal, block {bs}; medians of {args.reps} after warm-up (CUDA events).",
        "TFLOP/s counts 4*D*block^2 per kept block (diagonal blocks counted whole).",
        "",
        "| N | sparsity | masks | density | ours ms | ours TFLOP/s | Flex ms | Flex TFLOP/s | Flex ms / ours ms | SDPA dense ms | ours / SDPA | ours mma.sync ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        o = ours.get((r["n"], round(r["sparsity"], 2)))
        if o is None:
            continue
        kept = float(o["kept_blocks"])
        flops = 4.0 * d * bs * bs * kept
        om, fm = float(o["ours_ms"]), r["flex_ms"]
        lines.append(
            f"| {r['n']} | {r['sparsity']:.2f} | {o['mask_source']} | {float(o['density']):.4f} | {om:.3f} | "
            f"{flops / om / 1e9:.0f} | {fm:.3f} | {flops / fm / 1e9:.0f} | {fm / om:.2f} | {r['sdpa_ms']:.3f} | "
            f"{om / r['sdpa_ms']:.2f} | {float(o.get('mma_sync_ms') or 'nan'):.3f} |")
    # Every timed variant of ours against Flex on the same masks (ratio > 1: ours is faster).
    lines += ["", "Variants (ms; in brackets Flex ms / variant ms):", "",
              "| N | sparsity | default (TMA, ping-pong) | TMA, no ping-pong | cp.async pipelined (round 2 default) | default, rows across heads | mma.sync |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        o = ours.get((r["n"], round(r["sparsity"], 2)))
        if o is None:
            continue
        cells = []
        for key in ("ours_ms", "tma_no_pingpong_ms", "wgmma_cpasync_ms", "wgmma_rows_ms", "mma_sync_ms"):
            v = float(o.get(key) or "nan")
            cells.append(f"{v:.3f} ({r['flex_ms'] / v:.2f})" if v > 0 else "-")
        lines.append(f"| {r['n']} | {r['sparsity']:.2f} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    with open(os.path.join(args.out, "attention-h100.md"), "w") as fh:
        fh.write(table)


if __name__ == "__main__":
    main()
