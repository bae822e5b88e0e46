#!/usr/bin/env python3
"""The hottest source lines of one kernel in an Nsight Compute report, by warp stall samples.

On the GPU host, after collecting with source counters (the plugin is built with -lineinfo):
  ncu --kernel-name regex:Fused --launch-count 1 --section SourceCounters --section WarpStateStats \
      --import-source yes -o /tmp/rep <command>
  bench/gpu/ncu_top_lines.py /tmp/rep.ncu-rep [--top 30]
Reads `ncu -i REPORT --page source --csv --print-source cuda` and prints the lines with the most
samples (all samples, then the part not issued), with their share of the kernel's samples.
"""
import argparse
import csv
import io
import subprocess


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--ncu", default="/usr/local/cuda/bin/ncu")
    args = ap.parse_args()
    out = subprocess.run([args.ncu, "-i", args.report, "--page", "source", "--csv", "--print-source", "cuda"],
                         capture_output=True, text=True, check=False)
    rows = list(csv.reader(io.StringIO(out.stdout)))
    header_at = next((i for i, r in enumerate(rows) if any("Stall Sampling" in c for c in r)), None)
    if header_at is None:
        print("no stall sampling columns in the report:", out.stdout[:400], out.stderr[:400])
        return
    header = rows[header_at]
    all_col = next(i for i, c in enumerate(header) if "Stall Sampling (All" in c)
    not_issued = next((i for i, c in enumerate(header) if "Stall Sampling (Not" in c), None)
    src_col = next((i for i, c in enumerate(header) if c.strip() == "Source"), 1)
    line_col = next((i for i, c in enumerate(header) if c.strip() in ("#", "Line", "# Line")), 0)

    def num(s):
        try:
            return float(s.replace(",", ""))
        except ValueError:
            return 0.0

    body = [r for r in rows[header_at + 1:] if len(r) > all_col]
    total = sum(num(r[all_col]) for r in body) or 1.0
    body.sort(key=lambda r: -num(r[all_col]))
    print(f"{'line':>6} {'all %':>6} {'not issued %':>12}  source")
    for r in body[: args.top]:
        ni = num(r[not_issued]) / total * 100 if not_issued is not None else 0.0
        print(f"{r[line_col]:>6} {num(r[all_col]) / total * 100:6.1f} {ni:12.1f}  {r[src_col].strip()[:110]}")


if __name__ == "__main__":
    main()
