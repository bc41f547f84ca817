#!/usr/bin/env python3
"""Writes the session scripts under spec/vectors/sessions/ (grammar in README.md there).

The JSON files are what the tests read; this is the shorthand they were written in. Edit here,
run it, commit both:

    python3 spec/vectors/sessions/generate.py
"""
import json, os
OUT = os.path.dirname(os.path.abspath(__file__))

def O(stream, cls="BULK", svc="echo", comp=0, md=None):
    f = {"type": "OPEN", "stream": stream, "class": cls, "service": svc, "compression": comp}
    if md: f["metadata"] = md
    return f
def D(stream, payload="", flags=None, **kw):
    f = {"type": "DATA", "stream": stream, "flags": flags or []}
    if kw: f.update(kw)
    else: f["payload"] = payload
    return f
def R(stream, code, final=0): return {"type": "RESET", "stream": stream, "code": code, "final_size": final}
def C(stream, limit): return {"type": "CREDIT", "stream": stream, "limit": limit}
def S(cls, count): return {"type": "CREDIT", "stream": 0, "flags": ["STREAMS"], "class": cls, "count": count}
def G(last, code, **kw):
    f = {"type": "GOAWAY", "last_stream": last, "code": code}; f.update(kw); return f
def P(opaque=None, ack=False):
    f = {"type": "PING", "flags": ["ACK"] if ack else []}
    if opaque: f["opaque"] = opaque
    return f
SET = lambda pairs=(): {"type": "SETTINGS", "flags": [], "settings": [list(p) for p in pairs]}
ACK = {"type": "SETTINGS", "flags": ["ACK"], "settings": []}
UNK = {"type": "0x2a", "stream": 0, "flags": 0, "payload": "00"}

def recv(frame, *expect): return {"recv": frame, "expect": list(expect)}
def app(action, expect=(), **kw):
    s = {"app": action}; s.update(kw); s["expect"] = list(expect); return s
def adv(ms, *expect): return {"advance_ms": ms, "expect": list(expect)}
def send(f): return {"send": f}
def err(code): return {"error": code}
def ev(kind, **kw):
    e = {"event": kind}; e.update(kw); return e
def opened(stream, cls="BULK", svc="echo", comp=0): return ev("opened", stream=stream, **{"class": cls}, service=svc, compression=comp)
def data(stream, payload="", flags=None, **kw):
    e = ev("data", stream=stream, flags=flags or [])
    if kw: e.update(kw)
    else: e["payload"] = payload
    return e
def reset(stream, code): return ev("reset", stream=stream, code=code)

def script(name, spec, role, steps, local=None, peer=None, preface=True, tuning=False):
    s = {"name": name, "spec": spec, "role": role}
    if local: s["local_settings"] = local
    if peer: s["peer_settings"] = peer
    if not preface: s["preface"] = False
    if tuning: s["window_tuning"] = True
    s["steps"] = steps
    return s

NOKA = {"KEEPALIVE_INTERVAL_MS": 0}

BIG = 16375
files = {}
files["preface"] = [
    script("SETTINGS are answered with an ACK and make the session ready", "§3.2", "acceptor",
           [recv(SET(), ev("ready"), send(ACK))], preface=False),
    script("version ranges that do not meet", "§3.4", "acceptor",
           [recv(SET([("VERSION_MIN", 2), ("VERSION_MAX", 3)]), err("VERSION_MISMATCH"),
                 send(G(0, "VERSION_MISMATCH")))], preface=False),
    script("the first frame is not SETTINGS", "§3.1", "acceptor",
           [recv(P("0000000000000001"), err("PROTOCOL_ERROR"), send(G(0, "PROTOCOL_ERROR")))], preface=False),
    script("DATA before the peer's SETTINGS", "§3.1", "dialer",
           [recv(D(2, "00"), err("PROTOCOL_ERROR"), send(G(0, "PROTOCOL_ERROR")))], preface=False),
    script("a SETTINGS ACK as the first frame", "§3.1", "dialer",
           [recv(ACK, err("PROTOCOL_ERROR"), send(G(0, "PROTOCOL_ERROR")))], preface=False),
    script("a second SETTINGS frame", "§3.2", "acceptor",
           [recv(SET(), err("PROTOCOL_ERROR"), send(G(0, "PROTOCOL_ERROR")))]),
    script("an unsolicited SETTINGS ACK", "§3.2", "acceptor",
           [recv(ACK, err("PROTOCOL_ERROR"), send(G(0, "PROTOCOL_ERROR")))]),
    script("PING is answered with the same payload", "§5.6", "acceptor",
           [recv(P("0102030405060708"), send(P("0102030405060708", ack=True)))]),
    script("a PING ACK that matches no PING is ignored", "§5.6", "dialer",
           [recv(P("0000000000000009", ack=True))]),
    script("unknown frame types are ignored", "§4.1", "acceptor",
           [recv(UNK), recv({"type": "0x7f", "stream": 1, "flags": 255, "payload": "0102"})]),
    script("frames after a connection error are ignored", "§10.3", "acceptor",
           [recv(O(2), err("PROTOCOL_ERROR"), send(G(0, "PROTOCOL_ERROR"))),
            recv(P("0102030405060708")), recv(O(1))]),
]
files["streams"] = [
    script("an OPEN from a dialer that carries tether.user", "§5.2.1", "acceptor", [
        recv(O(1, md=[{"key": "tether.user", "value": "alice@example.com"}]), err("PROTOCOL_ERROR"),
             send(G(0, "PROTOCOL_ERROR"))),
    ]),
    script("an acceptor's OPEN carries tether.user to the dialer", "§5.2.1", "dialer", [
        recv(O(2, md=[{"key": "tether.user", "value": "listener:exporter"}]),
             opened(2)),
    ]),
    script("a dialer's stream from OPEN to both FINs", "§6.2, §6.3", "dialer", [
        app("open", [send(O(1, "COMMAND", "exec"))], **{"class": "COMMAND"}, service="exec", result={"stream": 1}),
        app("write", [send(D(1, "6869", ["END_MSG"]))], stream=1, payload="6869", end_msg=True),
        recv(D(1, "796f", ["FIN"]), data(1, "796f", ["FIN"])),
        app("finish", [send(D(1, "", ["FIN"]))], stream=1),
        app("write", [], stream=1, payload="00", result={"error": "closed"}),
    ]),
    script("OPENED tells the opener its stream was accepted and reached", "§5.8", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        recv({"type": "OPENED", "stream": 1}, ev("acknowledged", stream=1)),
        recv(D(1, "6869"), data(1, "6869")),
    ]),
    script("the receiver of an OPEN acknowledges it once", "§5.8", "acceptor", [
        recv(O(1), opened(1)),
        app("acknowledge", [send({"type": "OPENED", "stream": 1})], stream=1),
        app("acknowledge", [], stream=1),
    ], peer={"OPEN_ACK": 1}),
    script("no OPENED toward a peer that did not announce OPEN_ACK", "§5.8", "acceptor", [
        recv(O(1), opened(1)),
        app("acknowledge", [], stream=1),
    ]),
    script("OPENED on a stream the peer opened", "§5.8", "acceptor",
           [recv(O(1), opened(1)), recv({"type": "OPENED", "stream": 1}, err("PROTOCOL_ERROR"),
                                        send(G(1, "PROTOCOL_ERROR")))]),
    script("a second OPENED", "§5.8", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        recv({"type": "OPENED", "stream": 1}, ev("acknowledged", stream=1)),
        recv({"type": "OPENED", "stream": 1}, err("PROTOCOL_ERROR"), send(G(0, "PROTOCOL_ERROR"))),
    ]),
    script("OPENED on a stream never opened", "§5.8", "dialer",
           [recv({"type": "OPENED", "stream": 3}, err("PROTOCOL_ERROR"), send(G(0, "PROTOCOL_ERROR")))]),
    script("OPENED crossing the stream's RESET is ignored", "§5.8", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        app("reset", [send(R(1, "CANCEL"))], stream=1, code="CANCEL"),
        recv({"type": "OPENED", "stream": 1}),
    ]),
    script("an acceptor opens even ids, in order", "§6.1", "acceptor", [
        app("open", [send(O(2))], **{"class": "BULK"}, service="echo", result={"stream": 2}),
        app("open", [send(O(4, "LOGS", "logs/app"))], **{"class": "LOGS"}, service="logs/app", result={"stream": 4}),
    ]),
    script("OPEN with the wrong parity", "§6.1", "acceptor",
           [recv(O(2), err("PROTOCOL_ERROR"), send(G(0, "PROTOCOL_ERROR")))]),
    script("OPEN on a used id", "§6.1", "acceptor",
           [recv(O(1), opened(1)), recv(O(1), err("PROTOCOL_ERROR"), send(G(1, "PROTOCOL_ERROR")))]),
    script("OPEN with a lower id than before", "§6.1", "acceptor",
           [recv(O(5), opened(5)), recv(O(3), err("PROTOCOL_ERROR"), send(G(5, "PROTOCOL_ERROR")))]),
    script("ids need not be consecutive", "§6.1", "acceptor",
           [recv(O(1), opened(1)), recv(O(7, "LOGS", "logs"), opened(7, "LOGS", "logs"))]),
    script("DATA on a stream the peer has not opened", "§6.2", "acceptor",
           [recv(D(3, "00"), err("PROTOCOL_ERROR"), send(G(0, "PROTOCOL_ERROR")))]),
    script("DATA on an id of our own that we have not opened", "§6.2", "acceptor",
           [recv(D(2, "00"), err("PROTOCOL_ERROR"), send(G(0, "PROTOCOL_ERROR")))]),
    script("CREDIT on a stream the peer has not opened", "§6.2", "acceptor",
           [recv(C(5, 100), err("PROTOCOL_ERROR"), send(G(0, "PROTOCOL_ERROR")))]),
    script("RESET on an idle stream", "§6.3", "dialer",
           [recv(R(1, "CANCEL"), err("PROTOCOL_ERROR"), send(G(0, "PROTOCOL_ERROR")))]),
    script("OPEN beyond the class's stream-count credit", "§7.3", "acceptor", [
        recv(O(1, "COMMAND", "exec"), opened(1, "COMMAND", "exec")),
        recv(O(3, "BULK"), opened(3, "BULK")),
        recv(O(5, "COMMAND", "exec"), err("STREAM_LIMIT_ERROR"), send(G(3, "STREAM_LIMIT_ERROR"))),
    ], local={"INITIAL_STREAMS_COMMAND": 1}),
    script("stream-count credit comes back when a stream closes", "§6.5, §7.3", "acceptor", [
        recv(O(1, "COMMAND", "exec"), opened(1, "COMMAND", "exec")),
        app("accept", [], stream=1),
        recv(D(1, "", ["FIN"]), data(1, "", ["FIN"])),
        app("finish", [send(D(1, "", ["FIN"])), send(S("COMMAND", 2))], stream=1),
        recv(O(3, "COMMAND", "exec"), opened(3, "COMMAND", "exec")),
    ], local={"INITIAL_STREAMS_COMMAND": 1}),
    script("DATA after the peer's FIN", "§6.3", "acceptor", [
        recv(O(1), opened(1)),
        recv(D(1, "61", ["FIN"]), data(1, "61", ["FIN"])),
        recv(D(1, "62"), err("STREAM_CLOSED"), send(G(1, "STREAM_CLOSED"))),
    ]),
    script("DATA after the peer's RESET", "§6.3", "acceptor", [
        recv(O(1), opened(1)),
        recv(R(1, "CANCEL"), reset(1, "CANCEL"), send(S("BULK", 257))),
        recv(D(1, "62"), err("STREAM_CLOSED"), send(G(1, "STREAM_CLOSED"))),
    ]),
    script("DATA after both FINs", "§6.3", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        app("finish", [send(D(1, "", ["FIN"]))], stream=1),
        recv(D(1, "", ["FIN"]), data(1, "", ["FIN"])),
        recv(D(1, "00"), err("STREAM_CLOSED"), send(G(0, "STREAM_CLOSED"))),
    ]),
    script("DATA after our RESET is discarded", "§6.3, §6.5", "acceptor", [
        recv(O(1), opened(1)),
        app("reset", [send(R(1, "CANCEL")), send(S("BULK", 257))], stream=1, code="CANCEL"),
        recv(D(1, "61626364")),
        recv(D(1, "65", ["FIN"])),
        recv(R(1, "CANCEL", 5)),
    ]),
    script("RESET with a wrong final size", "§5.3", "acceptor", [
        recv(O(1), opened(1)),
        recv(D(1, "616263"), data(1, "616263")),
        recv(R(1, "CANCEL", 2), err("FLOW_CONTROL_ERROR"), send(G(1, "FLOW_CONTROL_ERROR"))),
    ]),
    script("our RESET carries the octets we sent", "§5.3", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        app("write", [send(D(1, "616263"))], stream=1, payload="616263"),
        app("reset", [send(R(1, "CANCEL", 3))], stream=1, code="CANCEL"),
        recv(D(1, "00")),
    ]),
    script("a RESET is not answered", "§6.5", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        recv(R(1, "UNKNOWN_SERVICE"), reset(1, "UNKNOWN_SERVICE")),
        app("write", [], stream=1, payload="00", result={"error": "closed"}),
    ]),
    script("the application refuses an inbound stream", "§6.2", "acceptor", [
        recv(O(1, "BULK", "nowhere"), opened(1, "BULK", "nowhere")),
        app("refuse", [send(R(1, "UNKNOWN_SERVICE")), send(S("BULK", 257))], stream=1, code="UNKNOWN_SERVICE"),
    ]),
    script("an inbound stream not accepted within the open timeout", "§6.2, §12", "acceptor", [
        recv(O(1), opened(1)),
        adv(29999),
        adv(1, reset(1, "TIMEOUT"), send(R(1, "TIMEOUT")), send(S("BULK", 257))),
    ], local=NOKA),
    script("an accepted stream does not time out", "§6.2, §12", "acceptor", [
        recv(O(1), opened(1)),
        app("accept", [], stream=1),
        adv(60000),
    ], local=NOKA),
    script("a half-closed stream times out", "§6.4, §12", "acceptor", [
        recv(O(1), opened(1)),
        app("accept", [], stream=1),
        recv(D(1, "", ["FIN"]), data(1, "", ["FIN"])),
        adv(599999),
        adv(1, reset(1, "TIMEOUT"), send(R(1, "TIMEOUT")), send(S("BULK", 257))),
    ], local=NOKA),
    script("a half-closed (local) stream receives until the peer's FIN", "§6.3", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        app("finish", [send(D(1, "", ["FIN"]))], stream=1),
        recv(D(1, "78"), data(1, "78")),
        recv(D(1, "79", ["FIN", "END_MSG"]), data(1, "79", ["FIN", "END_MSG"])),
    ]),
    script("DATA with FIN on a stream the peer has not opened", "§6.3 idle", "acceptor",
           [recv(D(3, "", ["FIN"]), err("PROTOCOL_ERROR"), send(G(0, "PROTOCOL_ERROR")))]),
    script("RESET while half-closed (local)", "§6.3 half-closed (local)", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        app("finish", [send(D(1, "", ["FIN"]))], stream=1),
        recv(R(1, "CANCEL"), reset(1, "CANCEL")),
        recv(D(1, "00"), err("STREAM_CLOSED"), send(G(0, "STREAM_CLOSED"))),
    ]),
    script("CREDIT while half-closed (local) is accepted", "§6.3 half-closed (local)", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        app("finish", [send(D(1, "", ["FIN"]))], stream=1),
        recv(C(1, 300000)),
        recv(D(1, "01", ["FIN"]), data(1, "01", ["FIN"])),
    ]),
    script("CREDIT while half-closed (remote) lets us send", "§6.3 half-closed (remote)", "acceptor", [
        recv(O(1), opened(1)),
        recv(D(1, "", ["FIN"]), data(1, "", ["FIN"])),
        app("write", [send(D(1, "0102"))], stream=1, payload="01020304"),
        recv(C(1, 4), send(D(1, "0304"))),
    ], peer={"INITIAL_STREAM_CREDIT": 2}),
    script("RESET while half-closed (remote)", "§6.3 half-closed (remote)", "acceptor", [
        recv(O(1), opened(1)),
        recv(D(1, "", ["FIN"]), data(1, "", ["FIN"])),
        recv(R(1, "CANCEL"), reset(1, "CANCEL"), send(S("BULK", 257))),
    ]),
    script("our RESET while half-closed (remote)", "§6.3 half-closed (remote)", "acceptor", [
        recv(O(1), opened(1)),
        recv(D(1, "61", ["FIN"]), data(1, "61", ["FIN"])),
        app("reset", [send(R(1, "CANCEL")), send(S("BULK", 257))], stream=1, code="CANCEL"),
    ]),
    script("CREDIT after our RESET is ignored", "§6.3 reset", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        app("reset", [send(R(1, "CANCEL"))], stream=1, code="CANCEL"),
        recv(C(1, 300000)),
    ]),
    script("RESET and CREDIT on a closed stream are ignored", "§6.3 closed", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        app("finish", [send(D(1, "", ["FIN"]))], stream=1),
        recv(D(1, "", ["FIN"]), data(1, "", ["FIN"])),
        recv(C(1, 300000)),
        recv(R(1, "CANCEL")),
    ]),
    script("a closed stream's undelivered octets keep connection credit until taken", "§7.2", "acceptor", [
        recv(O(1), opened(1)),
        recv(D(1, payload_repeat=["00", 9000], flags=["FIN"]), data(1, payload_repeat=["00", 9000], flags=["FIN"])),
        app("finish", [send(D(1, "", ["FIN"])), send(S("BULK", 257))], stream=1),
        app("consume", [send({"type": "CREDIT", "stream": 0, "limit": BIG + 9000})], stream=1, bytes=9000),
    ], local={"INITIAL_CONNECTION_CREDIT": BIG}),
    script("OPEN proposing compression we did not announce", "§9.2", "acceptor", [
        recv(O(1, "LOGS", "logs", 1), send(R(1, "COMPRESSION_ERROR")), send(S("LOGS", 257))),
    ], local={"COMPRESSION": 0}),
    script("OPEN proposing an announced algorithm", "§9.2", "acceptor", [
        recv(O(1, "LOGS", "logs", 1), opened(1, "LOGS", "logs", 1)),
        recv(D(1, "0a", ["COMPRESSED"]), data(1, "0a", ["COMPRESSED"])),
    ]),
    script("COMPRESSED DATA on a stream without compression", "§9.2", "acceptor", [
        recv(O(1), opened(1)),
        recv(D(1, "0a", ["COMPRESSED"]), reset(1, "COMPRESSION_ERROR"), send(R(1, "COMPRESSION_ERROR")),
             send(S("BULK", 257))),
    ]),
    script("opening toward a peer without the algorithm fails locally", "§9.2", "dialer", [
        app("open", [], **{"class": "LOGS"}, service="logs", compression=1, result={"error": "compression"}),
    ], peer={"COMPRESSION": 0}),
    script("an invalid service name fails locally", "§5.2", "dialer", [
        app("open", [], **{"class": "BULK"}, service="has space", result={"error": "invalid"}),
    ]),
]
files["flow-control"] = [
    script("DATA beyond stream credit", "§7.1", "acceptor", [
        recv(O(1), opened(1)),
        recv(D(1, "0102030405"), err("FLOW_CONTROL_ERROR"), send(G(1, "FLOW_CONTROL_ERROR"))),
    ], local={"INITIAL_STREAM_CREDIT": 4}),
    script("DATA exactly at stream credit", "§7.1", "acceptor", [
        recv(O(1), opened(1)),
        recv(D(1, "01020304"), data(1, "01020304")),
    ], local={"INITIAL_STREAM_CREDIT": 4}),
    script("DATA beyond connection credit", "§7.1", "acceptor", [
        recv(O(1), opened(1)),
        recv(D(1, payload_repeat=["ab", BIG]), data(1, payload_repeat=["ab", BIG])),
        recv(O(3), opened(3)),
        recv(D(3, "00"), err("FLOW_CONTROL_ERROR"), send(G(3, "FLOW_CONTROL_ERROR"))),
    ], local={"INITIAL_CONNECTION_CREDIT": BIG}),
    script("credit is returned only when the application takes the octets", "§7.2", "acceptor", [
        recv(O(1), opened(1)),
        recv(D(1, "0102030405060708"), data(1, "0102030405060708")),
        app("consume", [], stream=1, bytes=3),
        app("consume", [send(C(1, 12))], stream=1, bytes=1),
        recv(D(1, "01020304"), data(1, "01020304")),
        app("consume", [send(C(1, 20))], stream=1, bytes=8),
    ], local={"INITIAL_STREAM_CREDIT": 8}),
    script("octets discarded after our RESET return connection credit", "§7.2", "acceptor", [
        recv(O(1), opened(1)),
        app("reset", [send(R(1, "CANCEL")), send(S("BULK", 257))], stream=1, code="CANCEL"),
        recv(D(1, payload_repeat=["00", 8192]), send({"type": "CREDIT", "stream": 0, "limit": BIG + 8192})),
    ], local={"INITIAL_CONNECTION_CREDIT": BIG}),
    script("CREDIT going backwards", "§7.1", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        recv(C(1, 500000)),
        recv(C(1, 400000), err("FLOW_CONTROL_ERROR"), send(G(0, "FLOW_CONTROL_ERROR"))),
    ]),
    script("stream CREDIT below the initial credit", "§7.1", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        recv(C(1, 100), err("FLOW_CONTROL_ERROR"), send(G(0, "FLOW_CONTROL_ERROR"))),
    ]),
    script("connection CREDIT going backwards", "§7.1", "acceptor", [
        recv(C(0, 5000000)),
        recv(C(0, 4194305), err("FLOW_CONTROL_ERROR"), send(G(0, "FLOW_CONTROL_ERROR"))),
    ]),
    script("STREAMS CREDIT going backwards", "§7.3", "acceptor", [
        recv(S("BULK", 300)),
        recv(S("BULK", 299), err("FLOW_CONTROL_ERROR"), send(G(0, "FLOW_CONTROL_ERROR"))),
    ]),
    script("the sender stops at the peer's stream credit", "§7.1", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        app("write", [send(D(1, "01020304"))], stream=1, payload="0102030405060708"),
        recv(C(1, 6), send(D(1, "0506"))),
        recv(C(1, 8), send(D(1, "0708"))),
    ], peer={"INITIAL_STREAM_CREDIT": 4}),
    script("the sender stops at the peer's connection credit", "§7.1", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        app("write", [send(D(1, payload_repeat=["00", BIG]))], stream=1, payload_repeat=["00", BIG + 2]),
        recv(C(0, BIG + 2), send(D(1, "0000"))),
    ], peer={"INITIAL_CONNECTION_CREDIT": BIG}),
    script("a compressed unit waits for connection credit that covers all of it", "§7.1, §9.3", "dialer", [
        app("open", [send(O(1, "LOGS", "logs", 1))], **{"class": "LOGS"}, service="logs", compression=1,
            result={"stream": 1}),
        app("open", [send(O(3))], **{"class": "BULK"}, service="echo", result={"stream": 3}),
        app("write", [send(D(3, payload_repeat=["00", BIG - 375]))], stream=3, payload_repeat=["00", BIG - 375]),
        # 375 octets of connection credit left: the 1,000-octet unit does not fit, and is not cut.
        app("write", [], stream=1, payload_repeat=["ab", 1000], compressed=True),
        # A CREDIT that leaves 1,399: now it fits, although credit was never exhausted.
        recv(C(0, BIG + 1024), send(D(1, payload_repeat=["ab", 1000], flags=["COMPRESSED"]))),
    ], peer={"INITIAL_CONNECTION_CREDIT": BIG}),
    script("a grown window shrinks back after 5 s without data", "§7.4", "acceptor", [
        adv(50),
        recv(P("0000000000000001", ack=True)),                  # minRTT 50 ms
        recv(O(1), opened(1)),
        recv(D(1, payload_repeat=["00", 8000]), data(1, payload_repeat=["00", 8000])),
        app("consume", [send(C(1, 24000))], stream=1, bytes=8000),      # no pause before: no growth
        adv(50),
        recv(D(1, payload_repeat=["00", 8000]), data(1, payload_repeat=["00", 8000])),
        app("consume", [send(C(1, 48000))], stream=1, bytes=8000),      # a burst per RTT: 16,000 → 32,000
        adv(4999),
        adv(1),                                                  # 5 s idle: back to 16,000, nothing sent
        recv(D(1, payload_repeat=["00", 16000]), data(1, payload_repeat=["00", 16000])),
        app("consume", [send(P())], stream=1, bytes=16000),     # the RTT sample is over 1 s old
        recv(D(1, payload_repeat=["00", 8000]), data(1, payload_repeat=["00", 8000])),
        app("consume", [send(C(1, 56000))], stream=1, bytes=8000),      # 40,000 taken + the initial 16,000
    ], local={"INITIAL_STREAM_CREDIT": 16000, "KEEPALIVE_INTERVAL_MS": 0}, tuning=True),
    script("FIN waits for buffered data", "§6.4", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        app("write", [send(D(1, "0102"))], stream=1, payload="01020304"),
        app("finish", [], stream=1),
        recv(C(1, 4), send(D(1, "0304", ["FIN"]))),
    ], peer={"INITIAL_STREAM_CREDIT": 2}),
    script("opening waits for stream-count credit", "§7.3", "dialer", [
        app("open", [], **{"class": "BULK"}, service="echo", result={"error": "no_credit"}),
        recv(S("BULK", 1), ev("stream_credit", **{"class": "BULK"})),
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        app("open", [], **{"class": "BULK"}, service="echo", result={"error": "no_credit"}),
    ], peer={"INITIAL_STREAMS_BULK": 0}),
    script("messages are not merged into one frame", "§5.1", "dialer", [
        app("open", [send(O(1, "METADATA", "inventory"))], **{"class": "METADATA"}, service="inventory",
            result={"stream": 1}),
        app("write", [send(D(1, "7b7d", ["END_MSG"]))], stream=1, payload="7b7d", end_msg=True),
        app("write", [send(D(1, "5b5d", ["END_MSG"]))], stream=1, payload="5b5d", end_msg=True),
    ]),
]
# A graceful drain is announced first (last stream id 2³²−1, and a PING); the ACK of that PING
# (opaque 1: the session's first) sends the final GOAWAY (spec §10.2 step 1).
ANNOUNCE = [send(G(4294967295, "NO_ERROR")), send(P())]
ACK1 = P("0000000000000001", ack=True)
files["goaway"] = [
    script("GOAWAY refuses our streams above its last stream id", "§10.2", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        app("open", [send(O(3))], **{"class": "BULK"}, service="echo", result={"stream": 3}),
        recv(G(1, "NO_ERROR"), ev("goaway", last_stream=1, code="NO_ERROR"), reset(3, "REFUSED_STREAM")),
        app("open", [], **{"class": "BULK"}, service="echo", result={"error": "draining"}),
        app("write", [send(D(1, "00"))], stream=1, payload="00"),
    ]),
    script("after our GOAWAY new streams are refused", "§10.2", "acceptor", [
        recv(O(1), opened(1)),
        app("goaway", ANNOUNCE),
        recv(ACK1, send(G(1, "NO_ERROR"))),
        recv(O(3), send(R(3, "REFUSED_STREAM")), send(S("BULK", 257))),
        app("open", [], **{"class": "BULK"}, service="echo", result={"error": "draining"}),
    ]),
    script("an OPEN that crosses the drain announcement is processed", "§10.2", "acceptor", [
        app("goaway", ANNOUNCE),
        recv(O(1), opened(1)),
        recv(ACK1, send(G(1, "NO_ERROR"))),
        recv(O(3), send(R(3, "REFUSED_STREAM")), send(S("BULK", 257))),
    ]),
    script("a later GOAWAY raising its last stream id", "§10.2", "acceptor", [
        recv(G(1, "NO_ERROR"), ev("goaway", last_stream=1, code="NO_ERROR"), ev("drained")),
        recv(G(3, "NO_ERROR"), err("PROTOCOL_ERROR"), send(G(0, "PROTOCOL_ERROR"))),
    ]),
    script("a drain completes when the last stream finishes", "§10.2", "acceptor", [
        recv(O(1), opened(1)),
        app("accept", [], stream=1),
        app("goaway", ANNOUNCE),
        recv(ACK1, send(G(1, "NO_ERROR"))),
        recv(D(1, "", ["FIN"]), data(1, "", ["FIN"])),
        app("finish", [send(D(1, "", ["FIN"])), send(S("BULK", 257)), ev("drained")], stream=1),
    ]),
    script("a drain with no streams completes when its announcement is acknowledged", "§10.2", "dialer", [
        app("goaway", ANNOUNCE),
        recv(ACK1, send(G(0, "NO_ERROR")), ev("drained")),
    ]),
    script("streams left when the GOAWAY grace expires are cancelled", "§10.2, §12", "acceptor", [
        recv(O(1), opened(1)),
        app("accept", [], stream=1),
        app("goaway", ANNOUNCE),
        recv(ACK1, send(G(1, "NO_ERROR"))),
        adv(29999),
        adv(1, reset(1, "CANCEL"), send(R(1, "CANCEL")), send(S("BULK", 257)), ev("drained")),
    ], local=NOKA),
    script("an OPEN from a peer after its own GOAWAY", "§10.2", "acceptor", [
        recv(O(1), opened(1)),
        recv(G(0, "NO_ERROR"), ev("goaway", last_stream=0, code="NO_ERROR")),
        recv(O(3), err("PROTOCOL_ERROR"), send(G(1, "PROTOCOL_ERROR"))),
    ]),
    script("a peer's GOAWAY with an error code", "§10.3", "dialer", [
        app("open", [send(O(1))], **{"class": "BULK"}, service="echo", result={"stream": 1}),
        recv(G(0, "ENHANCE_YOUR_CALM", debug="slow down"),
             ev("goaway", last_stream=0, code="ENHANCE_YOUR_CALM"), reset(1, "REFUSED_STREAM"), ev("drained")),
    ]),
]
files["keepalive"] = [
    script("an idle connection is pinged", "§10.1", "dialer", [
        adv(14999),
        adv(1, send(P())),
    ]),
    script("a silent peer times out", "§10.1", "dialer", [
        adv(15000, send(P())),
        adv(19999),
        adv(1, err("KEEPALIVE_TIMEOUT"), send(G(0, "KEEPALIVE_TIMEOUT"))),
    ]),
    script("any frame keeps the connection alive", "§10.1", "dialer", [
        adv(15000, send(P())),
        adv(10000),
        recv(UNK),
        adv(10000),
        adv(5000, send(P())),
    ]),
    script("keepalive off sends no PING", "§10.1", "dialer", [
        adv(120000),
    ], local=NOKA),
]
for name, scripts in files.items():
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump({"spec": "PROTOCOL.md §13 session scripts", "scripts": scripts}, f, indent=1)
        f.write("\n")
    print(f"{name}.json: {len(scripts)} scripts")
