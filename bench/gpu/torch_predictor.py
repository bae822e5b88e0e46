#!/usr/bin/env python3
"""The CAB predictor (SPEC 1-3) written in plain PyTorch on the GPU: the peer that cab-bench-gpu is
measured against, in the same run on the same device.

max-L2 coarsening of Q and K, S = Qc Kc^T / sqrt(D) on the causal support, A = row softmax, the
r-nearest block graph (self excluded, undirected), triangles as the dense product B @ B, balanced
curvature on edges, and the cab row budget in local / bridge / importance shares. Timed with CUDA
events, median of many runs after warm-up, B=1, H=32, D=128, bf16, sparsity 0.95.

  python3 bench/gpu/torch_predictor.py [--n 4096 16384 65536 131072] [--blocks 64 128] [--out FILE]
"""
import argparse
import math
import statistics

import torch


def coarsen_maxl2(x, block):
    b, h, n, d = x.shape
    m = (n + block - 1) // block
    if m * block != n:  # zero tokens have norm 0 and never beat a real token
        x = torch.nn.functional.pad(x, (0, 0, 0, m * block - n))
    xb = x.view(b, h, m, block, d)
    norms = xb.float().pow(2).sum(-1)
    idx = norms.argmax(-1)
    return torch.gather(xb, 3, idx[..., None, None].expand(b, h, m, 1, d)).squeeze(3)


def predict(q, k, block, r=32, sparsity=0.95, local_ratio=0.3, bridge_ratio=0.2):
    qc, kc = coarsen_maxl2(q, block), coarsen_maxl2(k, block)
    b, h, m, d = qc.shape
    dev = q.device
    s = torch.matmul(qc, kc.transpose(-1, -2)).float() / math.sqrt(d)
    ii = torch.arange(m, device=dev)
    causal = ii[None, :] <= ii[:, None]
    s = s.masked_fill(~causal, float("-inf"))
    a = torch.softmax(s, dim=-1)

    # r-nearest graph, self excluded; rows with fewer than r candidates pick only valid ones.
    cand = a.masked_fill(~causal, -1.0)
    cand.diagonal(dim1=-2, dim2=-1).fill_(-1.0)
    vals, idx = cand.topk(min(r, m), dim=-1)
    adj = torch.zeros(b, h, m, m, device=dev, dtype=torch.bool)
    adj.scatter_(-1, idx, vals >= 0)
    adj = adj | adj.transpose(-1, -2)
    bf = adj.half()
    tri = torch.matmul(bf, bf).float()  # exact counts: integers below 2048 in fp16
    deg = adj.sum(-1).float()
    di, dj = deg[..., :, None], deg[..., None, :]
    curv = 2 / di + 2 / dj - 2 + 2 * tri / torch.maximum(di, dj) + tri / torch.minimum(di, dj)
    curv = torch.where(adj & causal, curv, torch.full_like(curv, float("inf")))

    # Row budgets and shares (as kernels/cpu/select_cab.cc).
    budget = torch.clamp(torch.ceil((1 - sparsity) * (ii.double() + 1) - 1e-6).long(), min=1)
    budget = torch.minimum(budget, ii + 1)
    local = torch.clamp(torch.round(local_ratio * budget.double()).long(), min=1)
    keep = torch.zeros(b, h, m, m, device=dev, dtype=torch.bool)
    keep[..., ii, ii] = True
    sink_ok = (local >= 2) & (ii > 0)
    keep[..., ii[sink_ok], 0] = True
    win = ii - 1
    win_ok = (local >= 3) & (win > 0)
    keep[..., ii[win_ok], win[win_ok]] = True
    taken = keep.sum(-1)
    nb = torch.minimum(torch.round(bridge_ratio * budget.double()).long(), budget - taken)
    kmax = int(nb.max().item()) if m > 0 else 0
    if kmax > 0:
        fb = curv.masked_fill(keep, float("inf"))
        fv, fi = fb.topk(kmax, dim=-1, largest=False)
        rank = torch.arange(kmax, device=dev)
        ok = (rank < nb[..., None]) & torch.isfinite(fv)
        keep.scatter_(-1, fi, ok | torch.gather(keep, -1, fi))
    need = budget - keep.sum(-1)
    kmax = int(need.max().item())
    if kmax > 0:
        sv = s.masked_fill(keep, float("-inf"))
        _, si = sv.topk(kmax, dim=-1)
        rank = torch.arange(kmax, device=dev)
        ok = rank < need[..., None]
        keep.scatter_(-1, si, ok | torch.gather(keep, -1, si))
    return keep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[4096, 16384, 65536, 131072])
    ap.add_argument("--blocks", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    dev = torch.device("cuda")
    lines = [f"# torch_predictor.py on {torch.cuda.get_device_name(0)}, torch {torch.__version__}: B=1, H={args.heads}, "
             f"D={args.dim}, bf16, cab, sparsity 0.95, median of {args.iters} after {args.warmup} warm-up\n",
             "| N | block | M | total ms | kept/row (last) |", "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for n in args.n:
        g = torch.Generator(device=dev).manual_seed(n)
        q = torch.randn(1, args.heads, n, args.dim, device=dev, dtype=torch.bfloat16, generator=g)
        k = torch.randn(1, args.heads, n, args.dim, device=dev, dtype=torch.bfloat16, generator=g)
        for block in args.blocks:
            times = []
            for it in range(args.warmup + args.iters):
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                keep = predict(q, k, block)
                e1.record()
                e1.synchronize()
                if it >= args.warmup:
                    times.append(e0.elapsed_time(e1))
            m = keep.shape[-1]
            line = f"| {n} | {block} | {m} | {statistics.median(times):.3f} | {int(keep[0, 0, m - 1].sum())} |"
            lines.append(line)
            print(line, flush=True)
            del keep
            torch.cuda.empty_cache()
        del q, k
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
