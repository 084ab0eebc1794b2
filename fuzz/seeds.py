#!/usr/bin/env python3
"""Write the seed inputs of every fuzz target into fuzz/corpus/<target>/ from
tests/data/salesforce-messages.json. Run once before the first fuzzing run; the committed
corpora already contain what survived `cargo fuzz cmin`."""
import hashlib, json, os, pathlib

root = pathlib.Path(__file__).resolve().parent
vectors = json.loads((root.parent / "tests/data/salesforce-messages.json").read_text())
seeds = {t: [] for t in ["batch", "server_error", "advice", "replay_marker", "file_storage", "token_reply"]}

def walk(v):
    if isinstance(v, dict):
        yield v
        for x in v.values():
            yield from walk(x)
    elif isinstance(v, list):
        for x in v:
            yield from walk(x)

for name, value in vectors.items():
    if isinstance(value, list) and name != "set_cookie_headers_seen":
        body = json.dumps(value).encode()
        seeds["batch"] += [body, body[: len(body) // 2]]
    for obj in walk(value):
        if isinstance(obj.get("error"), str):
            seeds["server_error"].append(obj["error"].encode())
        if isinstance(obj.get("advice"), dict):
            seeds["advice"].append(json.dumps(obj["advice"]).encode())
        if "data" in obj and "channel" in obj:
            seeds["replay_marker"].append(json.dumps(obj["data"]).encode())
        for key in ("createdDate", "CreatedDate"):
            if isinstance(obj.get(key), str):
                seeds["replay_marker"].append(obj[key].encode())
seeds["batch"].append(b"<html><body>Service Unavailable</body></html>")
seeds["replay_marker"].append(b"2016-03-29T16:40:08.208+0000")
seeds["file_storage"] += [
    json.dumps({"version": 1, "markers": {
        "/event/Order__e": {"replayId": 17, "date": "2026-11-28T07:00:02.114Z"},
        "/data/AccountChangeEvent": {"replayId": 6},
    }}, indent=2).encode(),
    b'{"version":1,"markers":{}}',
]
seeds["token_reply"] += [
    b"\x00" + json.dumps(vectors["oauth_token_reply"]).encode(),
    b"\x02" + json.dumps(vectors["oauth_error_reply"]).encode(),
    b"\x07<html>Maintenance</html>",
]

for target, inputs in seeds.items():
    out = root / "corpus" / target
    out.mkdir(parents=True, exist_ok=True)
    for data in inputs:
        (out / hashlib.sha1(data).hexdigest()).write_bytes(data)
    print(target, len(set(inputs)))
