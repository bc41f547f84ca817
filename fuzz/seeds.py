#!/usr/bin/env python3
"""Writes libFuzzer seed files for a target from spec/vectors/ (first octet = split stride).

    python3 fuzz/seeds.py frames|policy OUTDIR
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def frame_seeds():
    frames = json.load(open(os.path.join(ROOT, "spec/vectors/frames.json")))["frames"]
    malformed = json.load(open(os.path.join(ROOT, "spec/vectors/malformed.json")))["malformed"]
    for i, v in enumerate(frames):
        yield f"frame-{i:03d}", bytes([0x7f]) + bytes.fromhex(v["hex"])
    for i, v in enumerate(malformed):
        prefix = 0xff if v.get("preface") else 0x03
        yield f"malformed-{i:03d}", bytes([prefix]) + bytes.fromhex(v["hex"])
    # All small frames in a row, with the preface, split every 5 octets.
    magic = bytes([0x89, 0x54, 0x45, 0x54, 0x48, 0x45, 0x52, 0x0A])
    stream = magic + b"".join(bytes.fromhex(v["hex"]) for v in frames if len(v["hex"]) < 600)
    yield "stream", bytes([0x84]) + stream


def policy_seeds():
    """Documents from the policy reference's generator (spec/policy/reference.py), each with
    a pattern-set octet in front."""
    sys.path.insert(0, os.path.join(ROOT, "spec/policy"))
    import reference
    for i, (_, _, data) in enumerate(reference.corpus(7, 300)):
        yield f"doc-{i:03d}", bytes([i % 8]) + data[:4000]


def main():
    kind, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    seeds = {"frames": frame_seeds, "policy": policy_seeds}[kind]()
    count = 0
    for name, data in seeds:
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        count += 1
    print(f"{count} seeds in {out}")


if __name__ == "__main__":
    main()
