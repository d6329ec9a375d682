#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every fuzz target into fuzz/corpus/<target>/ (one file
per seed, named by its content's hash, as libFuzzer names what it finds). Run once before
the first long run; the committed corpus is these seeds plus what `cargo fuzz cmin` kept.
`seeds.py TARGET...` writes only those targets' seeds."""

import hashlib
import json
import os
import struct
import sys
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
SEP = b"\xff"  # the step separator of the stateful targets (never in UTF-8)


def write(target, seeds):
    if sys.argv[1:] and target not in sys.argv[1:]:
        return
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    for seed in seeds:
        if isinstance(seed, str):
            seed = seed.encode()
        name = hashlib.sha1(seed).hexdigest()
        with open(os.path.join(folder, name), "wb") as f:
            f.write(seed)


def j(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


DEVICE = {"id": "device-456", "name": "Rishad's iPhone", "type": "client"}
HOST = {"id": "device-1", "name": "Stage", "type": "host"}

ours = [
    j({"type": "join", "timestamp": 1706889600000, "sessionId": "abc123", "deviceInfo": DEVICE}),
    j({"type": "join", "sessionId": "K7P-3XQ", "sessionName": "Friday Jam", "protocolVersion": "1.0",
       "password": "s3cret", "token": "eyJhbGciOiJIUzI1NiJ9.e30.sig", "deviceInfo": HOST}),
    j({"type": "join", "sessionId": "abc", "protocolVersion": "2", "deviceInfo": DEVICE}),
    j({"type": "leave", "reason": "bye"}),
    j({"type": "leave"}),
    j({"type": "heartbeat", "timestamp": 1}),
    j({"type": "ping", "timestamp": 1706889600000}),
    '{"type":"ping","timestamp":-9223372036854775808}',
    '{"type":"ping","timestamp":1.5}',
    j({"type": "kick", "memberId": "client-789", "reason": "spam"}),
    j({"type": "member_list"}),
    '{"type":"message","data":{"b":[1,2.5e3,-0,true,null,"\\u00e9"],"a":{}},"to":"client-1"}',
    '{"type":"message","data": 12345678901234567890123 }',
    '{"type":"join","sessionId":"a","deviceInfo":{"id":"\\u001b]0;x\\u0007","name":"n","type":"client"}}',
    '{"type":"nope"}', "[]", "{", '{"type":7}',
    # The state and handoff layer (issue 11).
    j({"type": "join", "deviceInfo": HOST}),
    j({"type": "join", "sessionId": None, "deviceInfo": DEVICE}),
    j({"type": "state_set", "state": {"track": "a", "pos": 3}, "baseVersion": 2, "term": 1}),
    j({"type": "state_set", "patch": {"pos": None, "q": {"x": [1]}}}),
    j({"type": "state_set", "state": {}, "patch": {}}),
    j({"type": "state_set", "state": [1], "baseVersion": 1.5}),
    j({"type": "handoff_ready", "ready": True}),
    j({"type": "handoff_request", "targetId": "c_abc"}),
    j({"type": "handoff_request"}),
    j({"type": "handoff_accept", "handoffId": "h1"}),
    j({"type": "handoff_decline", "handoffId": "h1", "reason": "busy"}),
]
write("client_frame", ours)

app = [
    j({"type": "JOIN", "timestamp": 1, "messageId": "m-1",
       "payload": {"sessionId": "K7P-3XQ", "deviceId": "dev-2", "deviceName": "Phone", "version": "1.0.0"}}),
    j({"type": "LEAVE", "payload": {"deviceId": "dev-2", "reason": "user_left"}}),
    j({"type": "HEARTBEAT", "payload": {"deviceId": "dev-2", "timestamp": 5}}),
    j({"type": "PING", "payload": {"timestamp": 1738930100000}}),
    j({"type": "PONG", "payload": {"timestamp": 5, "pingTimestamp": 4}}),
    j({"type": "JOIN", "payload": {"sessionId": "bad id", "deviceId": "", "deviceName": "x"}}),
    j({"type": "OTHER_TYPE", "payload": {}}),
    j({"type": "join", "payload": {}}),
]
write("app_frame", app + ours[:3])

member = {"id": "client-1", "name": "Stage", "isHost": True, "connectionStatus": "connected",
          "joinedAt": 1706889600000, "latency": 12}
server = [
    j({"type": "welcome", "clientId": "client-789", "timestamp": 1706889600100,
       "sessionInfo": {"id": "abc123", "name": "Jam", "hostId": "client-1"}}),
    j({"type": "welcome", "clientId": "c", "sessionInfo": {"id": "s", "name": "n", "hostId": None}}),
    j({"type": "member_list", "timestamp": 2, "members": [member, dict(member, id="client-2", isHost=False)]}),
    j({"type": "member_joined", "timestamp": 3, "member": member}),
    j({"type": "member_left", "timestamp": 4, "memberId": "client-2", "reason": "timeout"}),
    j({"type": "kicked", "timestamp": 5, "reason": "spam"}),
    j({"type": "session_closed", "timestamp": 6, "reason": "Host left"}),
    j({"type": "pong", "timestamp": 1706889600000}),
    '{"type":"pong","timestamp":1.0e3}',
    j({"type": "error", "timestamp": 7, "code": "session_full", "message": "full",
       "details": {"maxMembers": 10, "currentMembers": 10}}),
    j({"type": "error", "code": "quota_exceeded", "message": "newer server"}),
    '{"type":"message","timestamp":8,"from":"client-1","data":{"z":1,"a":[0.1,"x"]}}',
    j({"type": "presence_diff", "timestamp": 9, "added": []}),
    # Found by server_frame: serde_json's best-effort float parser reads 50e90 as
    # 4.9999999999999995e91, which reads back as 4.999999999999999e91 (docs/RELIABILITY.md).
    '{"type":"error","timestamp":7,"code":"session_full","message":"full","details":{"maxM":50e90}}',
    # The state and handoff layer (issue 11).
    j({"type": "welcome", "clientId": "c", "sessionInfo": {"id": "A1B2C3", "name": "n", "hostId": "c"},
       "state": {"a": 1}, "version": 3, "term": 2}),
    j({"type": "state", "timestamp": 1, "state": {"k": [1, 2.5]}, "version": 4, "term": 2, "updatedBy": "c"}),
    j({"type": "handoff_started", "handoffId": "h1", "targetId": "c2"}),
    j({"type": "handoff_request", "handoffId": "h1", "fromId": "c", "state": {}, "version": 0, "term": 1,
       "timeoutMs": 10000}),
    j({"type": "handoff_ack", "handoffId": "h1", "hostId": "c2", "term": 2}),
    j({"type": "host_changed", "hostId": "c2", "previousHostId": "c", "term": 2, "reason": "host_lost"}),
    j({"type": "handoff_failed", "reason": "timeout", "handoffId": "h1", "targetId": "c2"}),
    j({"type": "handoff_failed", "reason": "meteor"}),
]
write("server_frame", server)


def frame(fin, opcode, payload, mask=b"\x37\xfa\x21\x3d", length=None):
    n = len(payload) if length is None else length
    out = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        out += bytes([0x80 | n])
    elif n <= 0xFFFF:
        out += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        out += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return out + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws(limit, max_read, seed, stream):
    return bytes([limit, max_read, seed]) + stream


hello = '{"type":"ping","timestamp":1}'.encode()
ws_seeds = [
    ws(7, 255, 1, frame(True, 1, hello)),
    ws(7, 3, 9, frame(True, 1, hello) + frame(True, 2, b"\x00\x01\x02")),
    ws(7, 1, 3, frame(False, 1, "caf\u00e9 ".encode()[:4]) + frame(True, 9, b"ping")
       + frame(True, 0, "caf\u00e9 ".encode()[4:])),
    ws(7, 5, 4, frame(True, 10, b"") + frame(True, 8, struct.pack(">H", 1000) + b"bye")),
    ws(6, 200, 5, frame(True, 1, b"x" * 300)),
    ws(7, 17, 6, frame(True, 2, b"\xab" * 70000)[:2000]),
    ws(5, 2, 7, frame(True, 1, b"x" * 301)),
    ws(7, 4, 8, frame(True, 1, b"\xc3\x28")),
    ws(7, 4, 8, frame(True, 8, b"\x03")),
    ws(7, 4, 8, bytes([0x81, 0x05]) + b"hello"),
    ws(7, 4, 8, bytes([0xC1, 0x80]) + b"\x00\x00\x00\x00"),
    ws(7, 4, 8, frame(False, 9, b"")),
]
write("ws_frames", ws_seeds)

ad = {"hostAddress": "192.168.1.100", "hostId": "host-dev", "hostName": "Device 7",
      "isPasswordProtected": False, "maxMembers": 10, "memberCount": 2, "port": 8080,
      "sessionId": "K7P-3XQ", "sessionName": "Friday Jam", "timestamp": 1738930100000, "version": "1.0.0"}
discovery = [
    b"\x00LOUDSYNC_RESPONSE:" + j(ad).encode(),
    b"\x00LOUDSYNC_RESPONSE:" + j({"sessionId": "s", "hostAddress": None, "extra": [1]}).encode(),
    b"\x00LOUDSYNC_DISCOVER",
    b"\x01loudsync-K7P-3XQ._loudsync._tcp.local.",
    b"\x01loudsync-._loudsync._tcp.local.",
    b"\x02session_name=Friday Jam\nhost_id=h\nhost_name=Dev\nmember_count=2\nmax_members=10\n"
    b"password_protected=true\nversion=1.0.0\ntimestamp=5",
    b"\x02member_count=007\nmax_members=-1\nmember_count=3",
]
write("discovery", discovery)

admin = [
    b"\x04s3cret\nBearer s3cret", b"\x0cs3cret\nBearer s3cret", b"\x0cs3cret\nbearer s3cret",
    b"\x0es3cret\nBearer  s3cret", b"\x0ds3cret\nBasic czNjcmV0", b"\x02\n", b"\x08\nBearer ",
]
write("admin_auth", admin)

joined = [j({"type": "welcome", "clientId": "c-2", "sessionInfo": {"id": "K7P-3XQ", "name": "Jam", "hostId": "c-2"}}).encode()]
machine = [
    SEP.join(joined + [j({"type": "member_list", "members": [member]}).encode(),
                       j({"type": "member_joined", "member": dict(member, id="c-3", isHost=False)}).encode(),
                       b"\x01\x14", j({"type": "pong", "timestamp": 1700000000000}).encode(),
                       b"\x03\x02c-3", b"\x03\x03x",
                       j({"type": "member_left", "memberId": "c-3", "reason": "left"}).encode(),
                       j({"type": "session_closed", "reason": "Host left"}).encode(), b"\x02\x03\xe8"]),
    SEP.join([j({"type": "error", "code": "session_full", "message": "full"}).encode(), b"\x02"]),
    SEP.join(joined + [b"\x02\x03\xe9", b"\x01\xff", b"\x01\xff", b"\x01\xff", b"\x01\xff"]),
    SEP.join(joined + [j({"type": "kicked", "reason": "bye"}).encode(), b"\x02\x03\xe8"]),
    SEP.join([b"\x01\xff"] * 8),
]
write("client_machine", machine)

conn = [
    SEP.join([ours[0].encode(), ours[6].encode(), ours[11].encode(), b"\x01\xff\xff", ours[5].encode(),
              b"\x03\x00\x00\x00\x00\x00\x00\x00\x01", ours[3].encode()]),
    SEP.join([app[0].encode(), app[2].encode(), app[3].encode(), app[4].encode(), app[1].encode()]),
    SEP.join([j({"type": "join", "sessionId": "xyz", "deviceInfo": DEVICE}).encode(), ours[6].encode()]),
    SEP.join([ours[6].encode(), b"\x02", b"not json", b"\x01\xff" * 3, b"\x04"]),
    SEP.join([ours[0].encode()] + [ours[6].encode()] * 12),
    SEP.join([ours[1].encode()] + [x.encode() for x in ours[-9:]]),
    SEP.join([x.encode() for x in ours[-9:]]),
]
write("connection", conn)

headers = [
    b"\x00Bearer s3cret", b"\x00bearer   tok=", b"\x00  BEARER x y", b"\x00Basic czNjcmV0", b"\x00Bearer",
    b"\x01dGhlIHNhbXBsZSBub25jZQ==", b"\x01dGhlIHNhbXBsZSBub25jZR==", b"\x01dGhlIHNhbXBsZSBub25jZQ",
    b"\x01dGhlIHNhbXBsZSBub25jZQ=\n",
    b"\x02203.0.113.9, 10.0.0.2" + bytes([198, 51, 100, 7]),
    b"\x06[2001:db8::1]:443,unknown, 127.0.0.1\n10.1.1.1" + bytes([10, 0, 0, 1]),
    b"\x0a::ffff:192.0.2.1" + bytes([192, 0, 2, 1]),
    b"\x12,,  ,1.2.3.4:80" + bytes([8, 8, 8, 8]),
]
write("http_headers", headers)

bodies = [
    j({"name": "Admin lobby", "id": "lobby"}),
    j({"name": "Friday Jam", "maxMembers": 10, "hostDeviceId": "dev-1", "hostName": "Stage",
       "hostToken": True, "hostTokenTtl": "2h", "password": "s3cret"}),
    j({"name": "x", "hostTokenTtl": "1h"}),
    j({"name": " ", "id": "bad id", "maxMembers": 0}),
    j({"name": "n", "unknown": 1}),
    '{"name":"\\u0007","hostTokenTtl":"366days","hostToken":true}',
    "", "null", "{}",
]
write("http_body", bodies)

def b64(s):
    import base64
    return base64.urlsafe_b64encode(s.encode()).rstrip(b"=").decode()

NOW = 1_800_000_000
claims = {"sid": "K7P-3XQ", "role": "host", "sub": "dev-1", "name": "Stage", "exp": NOW + 3600, "nbf": NOW - 10, "iat": NOW - 10}
header = j({"alg": "HS256", "typ": "JWT"})
tokens = [
    bytes([0x81]) + (header + "\n" + j(claims)).encode(),
    bytes([0x81]) + j(dict(claims, exp=NOW - 29)).encode(),
    bytes([0x81]) + j(dict(claims, nbf=NOW + 31, role="client")).encode(),
    bytes([0x81]) + (j({"alg": "none"}) + "\n" + j(claims)).encode(),
    bytes([0x81]) + (j({"alg": "HS512"}) + "\n" + j(claims)).encode(),
    bytes([0x82]) + j(claims).encode(),
    bytes([0x81]) + j({"sid": 7, "role": "admin", "exp": -1}).encode(),
    b"\x00" + (b64(header) + "." + b64(j(claims)) + ".c2ln").encode(),
    b"\x00" + (b64(j({"alg": "none"})) + "." + b64(j(claims)) + ".").encode(),
    b"\x00not.a.jwt", b"\x00...",
]
write("join_token", tokens)

# The pairing wire (issue 12): its WebSocket frames (P9 to P13), the crEvent data string (P18)
# and the query strings of eventsource/ and sendevent/ (P15 to P17).
CR_EVENT = {"type": "cr_event", "recipientClientId": "654321", "eventType": "ping", "eventSubType": "",
            "eventParams": [], "buffered": False, "logged": False, "interceptable": True, "sendCt": None}
pairing_ws = [
    j({"type": "cr_identify", "clientRole": "controller", "accessToken": "tok", "clientId": "123456"}),
    j({"type": "cr_identify", "clientRole": "responder", "accessToken": "tokA", "clientId": None}),
    j({"type": "cr_identify", "clientRole": "responder", "accessToken": "tokB"}),
    j({"type": "cr_identify", "clientRole": "Controller", "accessToken": 7, "clientId": 123456}),
    j({"type": "cr_identify", "clientRole": "controller", "clientId": "12345"}),
    j(CR_EVENT),
    j({"type": "cr_event", "recipientClientId": "000042", "eventType": "ping"}),
    j(dict(CR_EVENT, eventType="app1", eventSubType="notPaired", eventParams=["a b", "\u00e9", ""],
           buffered=True, logged=True, interceptable=False, sendCt=1700000000000,
           senderClientId="111111", receiveCt=5)),
    j(dict(CR_EVENT, eventParams=["a,b"])),
    j(dict(CR_EVENT, sendCt=1.5)),
    j({"type": "cr_alive"}),
    j({"type": "join", "sessionId": "abc"}),
    j({"type": "cr_welcome", "appId": "alpha", "clientId": "123456", "clientRole": "controller",
       "timestamp": 1700000000000}),
    j({"type": "cr_event", "eventType": "ping", "eventSubType": "", "eventParams": [], "buffered": False,
       "logged": False, "interceptable": True, "sendCt": 1700000000000, "receiveCt": None,
       "senderClientId": "123456", "timestamp": 1700000000001}),
    j({"type": "cr_alive", "timestamp": 1700000000002}),
    j({"type": "cr_aborted", "reason": "releasedByOther", "timestamp": 1700000000003}),
    j({"type": "cr_aborted", "reason": "invalid_role"}),
]
write("pairing_ws_frame", pairing_ws)

pairing_data = [
    "ping,,false,false,true,1700000000000,NaN,123456",
    "reject,appIdMismatch,false,false,true,NaN,NaN,654321",
    "app1,sub2,true,true,false,007,1700000000009,x,param 1,caf\u00e9,",
    "ping,,false,false,true,-0,,,",
    "ping,,false,false,true,-9223372036854775808,NaN,1",
    "ping,,false,false,true,9223372036854775808,NaN,1",
    "ping,,false,false,true,+5,NaN,1",
    "ping,,TRUE,false,true,NaN,NaN,1",
    "ping,a-b,false,false,true,NaN,NaN,1",
    "ping,,false,false,true,NaN,NaN",
]
write("pairing_event_data", pairing_data)


def query(**params):
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())


CREDS = {"clientId": "123456", "clientRole": "controller", "accessToken": "tokA"}
pairing_queries = [
    query(**CREDS),
    query(clientId="000042", clientRole="responder", accessToken="tok"),
    "clientRole=observer&clientId=12345&accessToken=",
    query(**CREDS, recipientClientId="654321", eventType="crEvent",
          eventData="ping,,false,false,true,1700000000000,NaN,123456,a b,\u00e9"),
    query(**CREDS, recipientClientId="123456", eventType="alive", eventData="7"),
    query(**dict(CREDS, accessToken="tokC"), recipientClientId="123456", eventType="close", eventData="7"),
    query(**CREDS, recipientClientId="654321", eventType="crEvent", eventData="ping,,yes,false,true,NaN,NaN,1"),
    query(**CREDS, recipientClientId="654321", eventType="ping", eventData=""),
    "clientId=1&clientId=123456&clientRole=contr%6fller&accessToken=tok+A&recipientClientId=654321"
    "&eventType=crEvent&eventData=ping%2c%2Cfalse,false,true,NaN,NaN,1&&x&%zz=%e9",
]
write("pairing_query", pairing_queries)
