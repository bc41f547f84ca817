#!/usr/bin/env python3
"""Writes libFuzzer seed files for a target from spec/vectors/ (first octet = split stride).

    python3 fuzz/seeds.py frames|policy|session|inflate|records OUTDIR
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


def session_seeds():
    """Scripts for the Session target (fuzz/Session/main.swift): a role octet (bit 0; bits 1–7 set
    idle and half-close timeouts), a preface octet,
    then (operation, stream pick, arguments…) steps; and every frame vector fed raw (operation 5)."""
    frames = json.load(open(os.path.join(ROOT, "spec/vectors/frames.json")))["frames"]
    for role in (0, 1, 0x17, 0x76):
        # peer opens, sends, we accept, consume, produce, time passes, FIN both ways
        yield f"script-{role}", bytes([role, 1,
            1, 0, 0, 3,        # OPEN from the peer, bulk
            9, 0,              # accept it
            0, 0, 2, 16,       # DATA with END_MSG, 1 KiB
            8, 0, 16,          # consume 1 KiB
            15, 0, 8,          # produce
            7, 0, 4, 0,        # write 128 octets
            15, 0, 8,
            14, 0, 50,         # 2 s pass
            10, 0,             # finish
            0, 0, 1, 0,        # peer FIN
            15, 0, 8])
        yield f"open-{role}", bytes([role, 1, 6, 0, 2, 7, 0, 200, 1, 15, 0, 20, 3, 0, 255, 10, 0, 15, 0, 20])
    for i, v in enumerate(frames):
        raw = bytes.fromhex(v["hex"])
        if len(raw) < 250:
            yield f"raw-{i:03d}", bytes([i & 1, 1, 5, 0, len(raw)]) + raw + bytes([15, 0, 4])


def inflate_seeds():
    """For the Inflate target: a limits octet, then frames as (length high, length low, octets):
    raw DEFLATE with a sync flush and its 00 00 FF FF trailer removed (spec §9.3)."""
    import zlib
    texts = [b"Nov 27 00:00:01 node-1 kubelet[1234]: I1127 event for pod web-1\n" * 40,
             bytes(65536), bytes(range(256)) * 8]
    for i, text in enumerate(texts):
        compressor = zlib.compressobj(6, zlib.DEFLATED, -13, 6)
        frames = b""
        for start in range(0, len(text), 4096):
            unit = compressor.compress(text[start:start + 4096]) + compressor.flush(zlib.Z_SYNC_FLUSH)
            unit = unit[:-4]
            frames += len(unit).to_bytes(2, "big") + unit
        yield f"deflate-{i}", bytes([i]) + frames


def records_seeds():
    """For the TLSRecords target: a mode octet (bit 0: a genuine record first; the rest: the split
    stride), then octets shaped like TLS records: application data, alerts, a ChangeCipherSpec,
    a record too long, a truncated header."""
    shapes = [
        bytes([0x17, 0x03, 0x03, 0x00, 0x20]) + bytes(32),
        bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]),
        bytes([0x14, 0x03, 0x03, 0x00, 0x01, 0x01]),
        bytes([0x17, 0x03, 0x03, 0xFF, 0xFF]) + bytes(64),
        bytes([0x17, 0x03]),
        bytes([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00]),
    ]
    for i, shape in enumerate(shapes):
        for mode in (0x00, 0x01, 0x06, 0xFF):
            yield f"record-{i}-{mode:02x}", bytes([mode]) + shape


def main():
    kind, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    seeds = {"frames": frame_seeds, "policy": policy_seeds, "session": session_seeds, "inflate": inflate_seeds,
             "records": records_seeds}[kind]()
    count = 0
    for name, data in seeds:
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        count += 1
    print(f"{count} seeds in {out}")


if __name__ == "__main__":
    main()
