#!/usr/bin/env python3
"""The hottest CUDA source lines of one kernel in an Nsight Compute report, by warp stall samples.

On the GPU host (the plugin is built with -lineinfo):
  ncu --kernel-name regex:Fused --launch-count 1 --section SourceCounters --section WarpStateStats \
      --import-source yes -o /tmp/rep <command>
  bench/gpu/ncu_top_lines.py /tmp/rep.ncu-rep [--top 30]        (or: --csv FILE, a saved export)
Reads `ncu -i REPORT --page source --csv --print-source cuda,sass`: per source file a header row,
then each CUDA line (with its summed metrics) followed by its SASS rows. Prints the lines with the
most samples: share of all samples, share of the not-issued ones, file:line, source.
"""
import argparse
import csv
import io
import subprocess


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report", nargs="?")
    ap.add_argument("--csv", help="an exported CSV instead of a report")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--ncu", default="/usr/local/cuda/bin/ncu")
    args = ap.parse_args()
    if args.csv:
        text = open(args.csv).read()
    else:
        text = subprocess.run([args.ncu, "-i", args.report, "--page", "source", "--csv", "--print-source", "cuda,sass"],
                              capture_output=True, text=True, check=False).stdout
    lines, path = [], "?"
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        if row[0] == "File Path":
            path = row[1].rsplit("/", 1)[-1]
        elif row[0].isdigit() and len(row) > 5:  # a CUDA line (SASS rows have no line number)
            samples, not_issued = number(row[4]), number(row[5])
            if samples is not None:
                lines.append((samples, not_issued or 0.0, f"{path}:{row[0]}", row[1].strip()[:100]))
    total = sum(s for s, _, _, _ in lines) or 1.0
    lines.sort(key=lambda x: -x[0])
    print(f"{int(total)} samples;  all %  not-issued %  file:line  source")
    for samples, not_issued, where, source in lines[: args.top]:
        print(f"{samples / total * 100:6.1f} {not_issued / total * 100:6.1f}  {where}  {source}")


if __name__ == "__main__":
    main()
