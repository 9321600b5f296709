#!/usr/bin/env python3
"""Median time between the hops of a request, from a build configured with -DATOLL_HOP_TRACE=ON.

Usage: scripts/hop_trace_report.py DIR [--min-share 0.02] [--threads]

DIR holds the hops-*.txt files that the client, atolld and its device processes wrote at exit
(src/common/hop_trace.h). Run one request at a time (a round-trip benchmark): the points of all
processes are merged by time, cut into requests at each "c.submit", and requests that passed the
same points in the same order are reported together, with the median time from each point to the
next and the median total.

With --threads it reports, for a run with many requests in flight (a request-rate benchmark), how
each thread spent its time instead: for every pair of consecutive points on a thread, how often it
occurred and its share of the thread's time from its first point to its last. A thread whose
work between points fills most of its time is the pipeline's bottleneck.
"""
import argparse
import collections
import glob
import os
import statistics
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--min-share", type=float, default=0.02,
                        help="report paths taken by at least this share of requests")
    parser.add_argument("--threads", action="store_true",
                        help="report each thread's time between its points instead")
    args = parser.parse_args()
    files = glob.glob(os.path.join(args.dir, "hops-*.txt"))
    if not files:
        sys.exit(f"{args.dir}: no hops-*.txt files (was the build configured with "
                 "-DATOLL_HOP_TRACE=ON, and did the processes exit normally?)")
    points = []
    for path in files:
        with open(path) as f:
            for line in f:
                ns, thread, name = line.split()
                points.append((int(ns), name, thread))
    points.sort()
    if args.threads:
        report_threads(points, args.min_share)
        return

    requests = []
    current = None
    for ns, name, thread in points:
        if name == "c.submit":
            current = [(ns, name, thread)]
            requests.append(current)
        elif current is not None:
            current.append((ns, name, thread))
            if name.startswith("c.woke"):
                current = None

    paths = collections.defaultdict(list)
    for request in requests:
        paths[tuple(p[1] for p in request)].append(request)
    total = len(requests)
    print(f"{total} requests from {len(files)} files; paths taken by at least "
          f"{args.min_share:.0%} of them:")
    for key, group in sorted(paths.items(), key=lambda kv: -len(kv[1])):
        if len(group) < args.min_share * total or len(key) < 2:
            continue
        totals = [(r[-1][0] - r[0][0]) / 1000 for r in group]
        print(f"\n{len(group)} requests, median {statistics.median(totals):.2f} us "
              f"(p10 {percentile(totals, 10):.2f}, p90 {percentile(totals, 90):.2f})")
        for i in range(1, len(key)):
            deltas = [(r[i][0] - r[i - 1][0]) / 1000 for r in group]
            same = all(r[i][2] == r[i - 1][2] for r in group)
            print(f"  {key[i - 1]:>12} -> {key[i]:<12} {statistics.median(deltas):8.2f} us"
                  f"  p90 {percentile(deltas, 90):8.2f}{'' if same else '  (another thread)'}")


def report_threads(points, min_share):
    by_thread = collections.defaultdict(list)
    for ns, name, thread in points:
        by_thread[thread].append((ns, name))
    for thread, marks in sorted(by_thread.items(), key=lambda kv: -len(kv[1])):
        span = (marks[-1][0] - marks[0][0]) / 1000
        if len(marks) < 100 or span <= 0:
            continue
        pairs = collections.defaultdict(lambda: [0, 0.0])
        for (ns0, a), (ns1, b) in zip(marks, marks[1:]):
            entry = pairs[(a, b)]
            entry[0] += 1
            entry[1] += (ns1 - ns0) / 1000
        print(f"\nthread {thread}: {len(marks)} points over {span / 1e6:.3f} s")
        for (a, b), (count, total) in sorted(pairs.items(), key=lambda kv: -kv[1][1]):
            if total < min_share * span:
                continue
            print(f"  {a:>12} -> {b:<12} {count:9d} x {total / count:8.2f} us = "
                  f"{total / span:6.1%} of its time")


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


if __name__ == "__main__":
    main()
