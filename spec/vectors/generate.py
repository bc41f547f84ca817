#!/usr/bin/env python3
"""Writes spec/vectors/frames.json and malformed.json from the descriptions below.

This is a second, independent encoder of spec §4–§5 (the Swift codec is the first): the Swift
tests decode every `hex` here and compare the fields, and re-encode the fields and compare the
bytes. Run it after changing a description; commit both the script and the JSON.

    python3 spec/vectors/generate.py
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

TYPES = {"DATA": 0, "OPEN": 1, "RESET": 2, "CREDIT": 3, "SETTINGS": 4, "PING": 5, "GOAWAY": 6, "OPENED": 7}
FLAGS = {
    "DATA": {"FIN": 1, "END_MSG": 2, "COMPRESSED": 4, "RESET_CONTEXT": 8},
    "CREDIT": {"STREAMS": 1},
    "SETTINGS": {"ACK": 1},
    "PING": {"ACK": 1},
}
CLASSES = {"COMMAND": 1, "METADATA": 2, "LOGS": 3, "BULK": 4}
CODES = [
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "STREAM_LIMIT_ERROR",
    "FRAME_SIZE_ERROR", "STREAM_CLOSED", "SETTINGS_ERROR", "VERSION_MISMATCH", "ENHANCE_YOUR_CALM",
    "KEEPALIVE_TIMEOUT", "REPLACED", "REFUSED_STREAM", "CANCEL", "UNKNOWN_SERVICE", "POLICY_DENIED",
    "COMPRESSION_ERROR", "CONNECT_ERROR", "TIMEOUT", "REFUSED",
]
SETTINGS = [
    None, "VERSION_MIN", "VERSION_MAX", "MAX_FRAME_PAYLOAD", "MAX_OPEN_SIZE", "INITIAL_STREAM_CREDIT",
    "INITIAL_CONNECTION_CREDIT", "INITIAL_STREAMS_COMMAND", "INITIAL_STREAMS_METADATA",
    "INITIAL_STREAMS_LOGS", "INITIAL_STREAMS_BULK", "COMPRESSION", "KEEPALIVE_INTERVAL_MS", "INSTANCE_ID",
    "REDIAL_WINDOW_MS", "OPEN_ACK", "IMPLEMENTATION_VERSION",
]
MAGIC = bytes([0x89, 0x54, 0x45, 0x54, 0x48, 0x45, 0x52, 0x0A])


def header(length, ftype, flags, stream):
    return struct.pack(">I", length)[1:] + bytes([ftype, flags]) + struct.pack(">I", stream)


def fr(ftype, flags, stream, payload):
    """A frame with a correct length field around an arbitrary (possibly invalid) payload."""
    return header(len(payload), ftype, flags, stream) + payload


def code(name):
    return CODES.index(name) if isinstance(name, str) else name


def setting_id(name):
    return SETTINGS.index(name) if isinstance(name, str) and not name.startswith("0x") else int(name, 16)


def payload_of(f):
    t = f["type"]
    if t == "DATA" or t.startswith("0x"):
        return bytes.fromhex(f.get("payload", ""))
    if t == "OPEN":
        svc = f["service"].encode()
        out = bytes([CLASSES[f["class"]], f.get("compression", 0), len(svc)]) + svc
        for e in f.get("metadata", []):
            k = e["key"].encode()
            v = bytes.fromhex(e["value_hex"]) if "value_hex" in e else e["value"].encode()
            out += bytes([len(k)]) + k + struct.pack(">H", len(v)) + v
        return out
    if t == "RESET":
        return struct.pack(">IQ", code(f["code"]), f["final_size"])
    if t == "CREDIT":
        if "STREAMS" in f.get("flags", []):
            return bytes([CLASSES[f["class"]]]) + struct.pack(">I", f["count"])
        return struct.pack(">Q", f["limit"])
    if t == "SETTINGS":
        return b"".join(struct.pack(">HI", setting_id(k), v) for k, v in f.get("settings", []))
    if t == "PING":
        return bytes.fromhex(f["opaque"])
    if t == "GOAWAY":
        return struct.pack(">II", f["last_stream"], code(f["code"])) + f.get("debug", "").encode()
    if t == "OPENED":
        return b""
    raise ValueError(t)


def encode(f):
    t = f["type"]
    ftype = TYPES[t] if t in TYPES else int(t, 16)
    flags = f.get("flags", [])
    bits = flags if isinstance(flags, int) else sum(FLAGS[t][x] for x in flags)
    payload = payload_of(f)
    return header(len(payload), ftype, bits, f.get("stream", 0)) + payload


FRAMES = [
    ("DATA with no flags", {"type": "DATA", "stream": 1, "flags": [], "payload": "68656c6c6f"}),
    ("DATA FIN", {"type": "DATA", "stream": 3, "flags": ["FIN"], "payload": "00ff"}),
    ("DATA END_MSG", {"type": "DATA", "stream": 2, "flags": ["END_MSG"], "payload": "7b7d"}),
    ("DATA FIN and END_MSG", {"type": "DATA", "stream": 5, "flags": ["FIN", "END_MSG"], "payload": "2a"}),
    ("DATA COMPRESSED", {"type": "DATA", "stream": 7, "flags": ["COMPRESSED"], "payload": "f248cdc9c90700"}),
    ("DATA COMPRESSED END_MSG", {"type": "DATA", "stream": 9, "flags": ["END_MSG", "COMPRESSED"], "payload": "0a"}),
    ("DATA all flags", {"type": "DATA", "stream": 11, "flags": ["FIN", "END_MSG", "COMPRESSED", "RESET_CONTEXT"],
                        "payload": "0b"}),
    ("DATA COMPRESSED RESET_CONTEXT", {"type": "DATA", "stream": 11, "flags": ["COMPRESSED", "RESET_CONTEXT"],
                                       "payload": "f248cdc9c90700"}),
    ("empty DATA carrying FIN", {"type": "DATA", "stream": 4294967295, "flags": ["FIN"], "payload": ""}),
    ("empty DATA without flags", {"type": "DATA", "stream": 13, "flags": [], "payload": ""}),
    ("DATA at the default maximum payload", {"type": "DATA", "stream": 1, "flags": [], "payload": "ab" * 16375}),
    ("OPEN COMMAND without metadata", {"type": "OPEN", "stream": 1, "class": "COMMAND", "compression": 0,
                                       "service": "exec", "metadata": []}),
    ("OPEN LOGS with deflate and metadata", {"type": "OPEN", "stream": 2, "class": "LOGS", "compression": 1,
                                             "service": "logs/kubelet",
                                             "metadata": [{"key": "offset", "value": "1048576"},
                                                          {"key": "follow", "value": "true"}]}),
    ("OPEN METADATA with an empty value", {"type": "OPEN", "stream": 15, "class": "METADATA", "compression": 0,
                                           "service": "inventory", "metadata": [{"key": "schema", "value": ""}]}),
    ("OPEN BULK with a binary value", {"type": "OPEN", "stream": 17, "class": "BULK", "compression": 0,
                                       "service": "tcp:10.0.0.1:6443",
                                       "metadata": [{"key": "trace-id", "value_hex": "00ff10"}]}),
    ("OPEN with a 255-octet service", {"type": "OPEN", "stream": 19, "class": "BULK", "compression": 0,
                                       "service": "s" * 255, "metadata": []}),
    ("RESET CANCEL", {"type": "RESET", "stream": 1, "code": "CANCEL", "final_size": 0}),
    ("RESET POLICY_DENIED with a final size", {"type": "RESET", "stream": 2, "code": "POLICY_DENIED",
                                               "final_size": 1099511627776}),
    ("RESET with an unknown code", {"type": "RESET", "stream": 21, "code": 0xdead, "final_size": 5}),
    ("CREDIT for a stream", {"type": "CREDIT", "stream": 1, "limit": 524288}),
    ("CREDIT for the connection", {"type": "CREDIT", "stream": 0, "limit": 8388608}),
    ("CREDIT at the largest limit", {"type": "CREDIT", "stream": 3, "limit": (1 << 62) - 1}),
    ("STREAMS CREDIT for COMMAND", {"type": "CREDIT", "stream": 0, "flags": ["STREAMS"], "class": "COMMAND",
                                    "count": 257}),
    ("STREAMS CREDIT for BULK", {"type": "CREDIT", "stream": 0, "flags": ["STREAMS"], "class": "BULK",
                                 "count": 16777216}),
    ("SETTINGS, every setting at its default", {"type": "SETTINGS", "flags": [], "settings": [
        ["VERSION_MIN", 1], ["VERSION_MAX", 1], ["MAX_FRAME_PAYLOAD", 16375], ["MAX_OPEN_SIZE", 4096],
        ["INITIAL_STREAM_CREDIT", 262144], ["INITIAL_CONNECTION_CREDIT", 4194304],
        ["INITIAL_STREAMS_COMMAND", 256], ["INITIAL_STREAMS_METADATA", 256], ["INITIAL_STREAMS_LOGS", 256],
        ["INITIAL_STREAMS_BULK", 256], ["COMPRESSION", 1], ["KEEPALIVE_INTERVAL_MS", 15000], ["INSTANCE_ID", 0]]}),
    ("SETTINGS empty", {"type": "SETTINGS", "flags": [], "settings": []}),
    ("SETTINGS with an unknown id", {"type": "SETTINGS", "flags": [],
                                     "settings": [["0x00ff", 7], ["INSTANCE_ID", 3735928559]]}),
    ("SETTINGS with keepalive off", {"type": "SETTINGS", "flags": [], "settings": [["KEEPALIVE_INTERVAL_MS", 0]]}),
    ("SETTINGS ACK", {"type": "SETTINGS", "flags": ["ACK"], "settings": []}),
    ("PING", {"type": "PING", "flags": [], "opaque": "0102030405060708"}),
    ("PING ACK", {"type": "PING", "flags": ["ACK"], "opaque": "ffffffffffffffff"}),
    ("GOAWAY graceful", {"type": "GOAWAY", "last_stream": 0, "code": "NO_ERROR", "debug": ""}),
    ("GOAWAY with debug text", {"type": "GOAWAY", "last_stream": 4096, "code": "ENHANCE_YOUR_CALM",
                                "debug": "reset rate exceeded"}),
    ("GOAWAY refusing a connection (§10.3)", {"type": "GOAWAY", "last_stream": 0, "code": "REFUSED",
                                              "debug": "identity revoked"}),
    ("GOAWAY with 256 octets of UTF-8", {"type": "GOAWAY", "last_stream": 7, "code": "REPLACED",
                                         "debug": "é" * 128}),
    ("OPENED", {"type": "OPENED", "stream": 1, "flags": []}),
    ("OPENED on the highest stream id", {"type": "OPENED", "stream": 4294967295, "flags": []}),
    ("SETTINGS announcing OPEN_ACK", {"type": "SETTINGS", "flags": [], "settings": [["OPEN_ACK", 1]]}),
    ("SETTINGS naming release 0.18.2", {"type": "SETTINGS", "flags": [],
                                         "settings": [["IMPLEMENTATION_VERSION", 0x001202]]}),
    ("unknown frame type", {"type": "0x2a", "stream": 9, "flags": 3, "payload": "cafe"}),
    ("unknown frame type on stream 0, empty", {"type": "0xff", "stream": 0, "flags": 0, "payload": ""}),
]



MALFORMED = [
    # (name, hex, error, reason, section, options)
    ("bad preface magic", MAGIC[:7].hex() + "00" + encode({"type": "SETTINGS", "settings": []}).hex(),
     "PROTOCOL_ERROR", "badPreface", "§3.1", {"preface": True}),
    ("length over MAX_FRAME_PAYLOAD", header(16376, 0, 0, 1).hex(), "FRAME_SIZE_ERROR", "frameTooLarge", "§4.2", {}),
    ("16 MiB length", header(0xFFFFFF, 0, 0, 1).hex(), "FRAME_SIZE_ERROR", "frameTooLarge", "§4.2", {}),
    ("unknown type over the maximum length", header(20000, 0x2a, 0, 0).hex(), "FRAME_SIZE_ERROR", "frameTooLarge",
     "§4.2", {}),
    ("DATA on stream 0", header(1, 0, 0, 0).hex() + "00", "PROTOCOL_ERROR", "wrongStream", "§4.3", {}),
    ("OPEN on stream 0", (header(7, 1, 0, 0) + bytes([1, 0, 4]) + b"exec").hex(), "PROTOCOL_ERROR", "wrongStream",
     "§4.3", {}),
    ("RESET on stream 0", (header(12, 2, 0, 0) + bytes(12)).hex(), "PROTOCOL_ERROR", "wrongStream", "§4.3", {}),
    ("SETTINGS on a stream", header(0, 4, 0, 1).hex(), "PROTOCOL_ERROR", "wrongStream", "§4.3", {}),
    ("PING on a stream", (header(8, 5, 0, 3) + bytes(8)).hex(), "PROTOCOL_ERROR", "wrongStream", "§4.3", {}),
    ("GOAWAY on a stream", (header(8, 6, 0, 2) + bytes(8)).hex(), "PROTOCOL_ERROR", "wrongStream", "§4.3", {}),
    ("OPENED on stream 0", header(0, 7, 0, 0).hex(), "PROTOCOL_ERROR", "wrongStream", "§4.3", {}),
    ("STREAMS CREDIT on a stream", (header(5, 3, 1, 1) + bytes([1, 0, 0, 0, 1])).hex(), "PROTOCOL_ERROR",
     "wrongStream", "§4.3", {}),
    ("empty COMPRESSED DATA", header(0, 0, 4, 1).hex(), "PROTOCOL_ERROR", "emptyCompressedData", "§5.1", {}),
    ("RESET_CONTEXT without COMPRESSED", (header(1, 0, 8, 1) + b"a").hex(), "PROTOCOL_ERROR", "resetWithoutCompression",
     "§5.1", {}),
    ("RESET with 8 octets", (header(8, 2, 0, 1) + bytes(8)).hex(), "FRAME_SIZE_ERROR", "badPayloadSize", "§5", {}),
    ("CREDIT with 4 octets", (header(4, 3, 0, 1) + bytes(4)).hex(), "FRAME_SIZE_ERROR", "badPayloadSize", "§5", {}),
    ("STREAMS CREDIT with 8 octets", (header(8, 3, 1, 0) + bytes(8)).hex(), "FRAME_SIZE_ERROR", "badPayloadSize",
     "§5", {}),
    ("OPENED with a payload", (header(1, 7, 0, 1) + bytes(1)).hex(), "FRAME_SIZE_ERROR", "badPayloadSize", "§5", {}),
    ("PING with 7 octets", (header(7, 5, 0, 0) + bytes(7)).hex(), "FRAME_SIZE_ERROR", "badPayloadSize", "§5", {}),
    ("SETTINGS ACK with a payload", (header(6, 4, 1, 0) + struct.pack(">HI", 1, 1)).hex(), "FRAME_SIZE_ERROR",
     "badPayloadSize", "§5", {}),
    ("SETTINGS with 7 octets", (header(7, 4, 0, 0) + bytes(7)).hex(), "FRAME_SIZE_ERROR", "badPayloadSize", "§5",
     {}),
    ("GOAWAY with 7 octets", (header(7, 6, 0, 0) + bytes(7)).hex(), "FRAME_SIZE_ERROR", "badPayloadSize", "§5", {}),
    ("GOAWAY with 257 octets of debug text", (header(265, 6, 0, 0) + bytes(8) + b"x" * 257).hex(),
     "FRAME_SIZE_ERROR", "debugTooLong", "§5.7", {}),
    ("GOAWAY with debug text that is not UTF-8", (header(10, 6, 0, 0) + bytes(8) + b"\xc3\x28").hex(),
     "PROTOCOL_ERROR", "debugNotUTF8", "§5.7", {}),
    ("OPEN over MAX_OPEN_SIZE", fr(1, 0, 1, bytes([1, 0, 1]) + b"a" + bytes(4093)).hex(),
     "FRAME_SIZE_ERROR", "openTooLarge", "§5.2", {}),
    ("OPEN over a lowered MAX_OPEN_SIZE", fr(1, 0, 1, bytes([1, 0, 1]) + b"a" +
                                           bytes([1]) + b"k" + struct.pack(">H", 94) + bytes(94)).hex(),
     "FRAME_SIZE_ERROR", "openTooLarge", "§5.2", {"max_open_size": 64}),
    ("OPEN with 2 octets", fr(1, 0, 1, bytes([1, 0])).hex(), "FRAME_SIZE_ERROR", "openTruncated", "§5.2",
     {}),
    ("OPEN whose service runs past the payload", fr(1, 0, 1, bytes([1, 0, 9]) + b"ab").hex(),
     "FRAME_SIZE_ERROR", "openTruncated", "§5.2", {}),
    ("OPEN whose metadata value runs past the payload",
     fr(1, 0, 1, bytes([1, 0, 1]) + b"a" + bytes([2]) + b"ab" + struct.pack(">H", 9) + b"xy").hex(),
     "FRAME_SIZE_ERROR", "openTruncated", "§5.2", {}),
    ("OPEN with class 0", fr(1, 0, 1, bytes([0, 0, 1]) + b"a").hex(), "PROTOCOL_ERROR", "invalidClass",
     "§5.2", {}),
    ("OPEN with class 5", fr(1, 0, 1, bytes([5, 0, 1]) + b"a").hex(), "PROTOCOL_ERROR", "invalidClass",
     "§5.2", {}),
    ("OPEN with an empty service", fr(1, 0, 1, bytes([1, 0, 0])).hex(), "PROTOCOL_ERROR",
     "invalidService", "§5.2", {}),
    ("OPEN with a space in the service", fr(1, 0, 1, bytes([1, 0, 3]) + b"a b").hex(), "PROTOCOL_ERROR",
     "invalidService", "§5.2", {}),
    ("OPEN with an upper-case metadata key",
     fr(1, 0, 1, bytes([1, 0, 1]) + b"a" + bytes([1]) + b"K" + struct.pack(">H", 0)).hex(),
     "PROTOCOL_ERROR", "invalidMetadataKey", "§5.2", {}),
    ("OPEN with an empty metadata key",
     fr(1, 0, 1, bytes([1, 0, 1]) + b"a" + bytes([0]) + struct.pack(">H", 0)).hex(),
     "PROTOCOL_ERROR", "invalidMetadataKey", "§5.2", {}),
    ("OPEN with a repeated metadata key",
     fr(1, 0, 1, bytes([1, 0, 1]) + b"a" + (bytes([1]) + b"k" + struct.pack(">H", 1) + b"v") * 2).hex(),
     "PROTOCOL_ERROR", "duplicateMetadataKey", "§5.2", {}),
    ("STREAMS CREDIT for class 0", (header(5, 3, 1, 0) + bytes([0, 0, 0, 0, 1])).hex(), "PROTOCOL_ERROR",
     "invalidCreditClass", "§5.4", {}),
    ("CREDIT above 2^62-1", (header(8, 3, 0, 1) + struct.pack(">Q", 1 << 62)).hex(), "FLOW_CONTROL_ERROR",
     "creditTooLarge", "§5.4", {}),
    ("SETTINGS with a repeated id", (header(12, 4, 0, 0) + struct.pack(">HIHI", 1, 1, 1, 1)).hex(),
     "SETTINGS_ERROR", "duplicateSetting", "§3.3", {}),
    ("SETTINGS MAX_FRAME_PAYLOAD below 16375", (header(6, 4, 0, 0) + struct.pack(">HI", 3, 16374)).hex(),
     "SETTINGS_ERROR", "settingOutOfRange", "§3.3", {}),
    ("SETTINGS MAX_OPEN_SIZE above 4096", (header(6, 4, 0, 0) + struct.pack(">HI", 4, 4097)).hex(),
     "SETTINGS_ERROR", "settingOutOfRange", "§3.3", {}),
    ("SETTINGS INITIAL_STREAM_CREDIT above 2^31-1", (header(6, 4, 0, 0) + struct.pack(">HI", 5, 1 << 31)).hex(),
     "SETTINGS_ERROR", "settingOutOfRange", "§3.3", {}),
    ("SETTINGS KEEPALIVE_INTERVAL_MS of 500", (header(6, 4, 0, 0) + struct.pack(">HI", 12, 500)).hex(),
     "SETTINGS_ERROR", "settingOutOfRange", "§3.3", {}),
    ("SETTINGS VERSION_MIN above VERSION_MAX", (header(12, 4, 0, 0) + struct.pack(">HIHI", 1, 3, 2, 2)).hex(),
     "SETTINGS_ERROR", "settingOutOfRange", "§3.3", {}),
    ("SETTINGS OPEN_ACK of 2", (header(6, 4, 0, 0) + struct.pack(">HI", 15, 2)).hex(),
     "SETTINGS_ERROR", "settingOutOfRange", "§3.3", {}),
    ("SETTINGS IMPLEMENTATION_VERSION past 24 bits", (header(6, 4, 0, 0) + struct.pack(">HI", 16, 0x1000000)).hex(),
     "SETTINGS_ERROR", "settingOutOfRange", "§3.3", {}),
    ("SETTINGS VERSION_MIN of 0", (header(6, 4, 0, 0) + struct.pack(">HI", 1, 0)).hex(), "SETTINGS_ERROR",
     "settingOutOfRange", "§3.3", {}),
]

INCOMPLETE = [
    ("truncated header", header(5, 0, 0, 1).hex()[:10]),
    ("header without its payload", header(5, 0, 0, 1).hex() + "6869"),
    ("half a preface", MAGIC[:5].hex()),
]


def main():
    frames = [{"name": n, "hex": encode(f).hex(), "frame": f} for n, f in FRAMES]
    malformed = []
    for name, hexstr, err, reason, section, opts in MALFORMED:
        entry = {"name": name, "hex": hexstr, "error": err, "reason": reason, "section": section}
        entry.update(opts)
        malformed.append(entry)
    for name, hexstr in INCOMPLETE:
        entry = {"name": name, "hex": hexstr, "error": "incomplete"}
        if "preface" in name:
            entry["preface"] = True
        malformed.append(entry)
    with open(os.path.join(HERE, "frames.json"), "w") as f:
        json.dump({"spec": "PROTOCOL.md §4-§5", "frames": frames}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(HERE, "malformed.json"), "w") as f:
        json.dump({"spec": "PROTOCOL.md §3-§5", "malformed": malformed}, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
