#!/usr/bin/env python3
"""A mock Amazon Bedrock runtime for Enclave's tests.

Independent of Enclave's Rust code on purpose:

- every request's SigV4 signature is recomputed with botocore (botocore.auth.SigV4Auth) over
  the request as received, and refused with 403 InvalidSignatureException when it differs;
- ConverseStream answers are framed by the small event-stream encoder below (zlib.crc32), and
  every frame is checked to decode with botocore.eventstream before it is sent.

Usage: bedrock_mock.py --region R --access-key AK --secret-key SK [--session-token T]
Prints `listening on 127.0.0.1:PORT` and serves until killed. Uses the standard library and
botocore only.

The model id in the path picks the behaviour:
  ...throttle...     429 ThrottlingException
  ...notready...     429 ModelNotReadyException
  ...denied...       403 AccessDeniedException
  ...invalid...      400 ValidationException
  ...unavailable...  503 ServiceUnavailableException
  ...badcrc...       a stream whose second frame has a corrupted message CRC
  ...midstream...    a stream that ends with a modelStreamErrorException
  ...tools...        a tool call (weather, {"city": "Paris"}), then, once the conversation
                     holds its toolResult, an answer built from that result
  anything else      "Hello from <region>: you said: <last user text>"
  /invoke            Titan embeddings: {"embedding": [8 floats], "inputTextTokenCount"}
GET /__stats answers {"requests": [...], "bad_signatures": n} (requests: model, action, body).
"""

import argparse
import datetime
import hashlib
import hmac
import json
import struct
import sys
import threading
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.eventstream


# === an independent event-stream encoder ===

def encode_message(headers, payload):
    """One event-stream message: string headers (type 7) and a payload."""
    hb = b""
    for name, value in headers.items():
        n = name.encode()
        v = value.encode()
        hb += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(hb) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hb))
    prelude += struct.pack(">I", zlib.crc32(prelude) & 0xFFFFFFFF)
    body = prelude + hb + payload
    return body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def checked(frame, headers, payload):
    """The frame, after checking that botocore's decoder reads back what was encoded."""
    buf = botocore.eventstream.EventStreamBuffer()
    buf.add_data(frame)
    msgs = list(buf)
    assert len(msgs) == 1, msgs
    assert msgs[0].headers == headers, (msgs[0].headers, headers)
    assert msgs[0].payload == payload
    return frame


def event(kind, body):
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    payload = json.dumps(body).encode()
    return checked(encode_message(headers, payload), headers, payload)


def exception(kind, message):
    headers = {":exception-type": kind, ":content-type": "application/json",
               ":message-type": "exception"}
    payload = json.dumps({"message": message}).encode()
    return checked(encode_message(headers, payload), headers, payload)


# === the server ===

class State:
    def __init__(self, region, credentials):
        self.region = region
        self.credentials = credentials
        self.lock = threading.Lock()
        self.requests = []
        self.bad_signatures = 0


def verify_signature(state, handler, body):
    """None when the request's SigV4 signature is right, else why not."""
    auth = handler.headers.get("Authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "no SigV4 Authorization header"
    fields = dict(
        part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 "):].split(",")
    )
    scope = fields.get("Credential", "").split("/")
    if len(scope) != 5:
        return "malformed credential scope"
    access_key, date, region, service, terminal = scope
    if access_key != state.credentials.access_key:
        return "unknown access key"
    if (region, service, terminal) != (state.region, "bedrock", "aws4_request"):
        return f"wrong scope {region}/{service}/{terminal}"
    amz_date = handler.headers.get("X-Amz-Date", "")
    if not amz_date.startswith(date):
        return "x-amz-date does not match the scope's date"
    when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=datetime.timezone.utc)
    if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 300:
        return "x-amz-date is more than 5 minutes off"
    signed = fields.get("SignedHeaders", "").split(";")
    for required in ("host", "x-amz-date"):
        if required not in signed:
            return f"{required} is not signed"
    token = state.credentials.token
    if token is not None:
        if "x-amz-security-token" not in signed:
            return "the session token is not signed"
        if handler.headers.get("X-Amz-Security-Token") != token:
            return "wrong session token"
    sha = handler.headers.get("X-Amz-Content-SHA256")
    if sha is not None and sha != hashlib.sha256(body).hexdigest():
        return "x-amz-content-sha256 does not match the body"
    headers = {}
    for name in signed:
        values = handler.headers.get_all(name)
        if values is None:
            return f"signed header {name} is missing"
        headers[name] = ",".join(values)
    url = "http://" + handler.headers["Host"] + handler.path
    request = botocore.awsrequest.AWSRequest(
        method=handler.command, url=url, headers=headers, data=body)
    request.context["timestamp"] = amz_date
    signer = botocore.auth.SigV4Auth(state.credentials, "bedrock", state.region)
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    expected = signer.signature(string_to_sign, request)
    if not hmac.compare_digest(expected, fields.get("Signature", "")):
        return "signature mismatch"
    return None


def last_user_text(body):
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            for block in message.get("content", []):
                if "text" in block:
                    return block["text"]
    return ""


def tool_result(body):
    for message in body.get("messages", []):
        for block in message.get("content", []):
            if "toolResult" in block:
                return " ".join(c.get("text", "") for c in block["toolResult"]["content"])
    return None


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def send_json(self, status, body, error_type=None):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if error_type:
                self.send_header("x-amzn-ErrorType",
                                 error_type + ":http://internal.amazon.com/coral/com.amazon.bedrock/")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/__stats":
                with state.lock:
                    self.send_json(200, {"requests": state.requests,
                                         "bad_signatures": state.bad_signatures})
            else:
                self.send_json(404, {"message": "not found"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            why = verify_signature(state, self, raw)
            if why is not None:
                with state.lock:
                    state.bad_signatures += 1
                self.send_json(403, {"message": "The request signature we calculated does not "
                                                "match the signature you provided: " + why},
                               "InvalidSignatureException")
                return
            parts = self.path.split("/")
            if len(parts) != 4 or parts[1] != "model":
                self.send_json(404, {"message": "unknown path"}, "UnknownOperationException")
                return
            model = urllib.parse.unquote(parts[2])
            action = parts[3]
            body = json.loads(raw or b"{}")
            with state.lock:
                state.requests.append({"model": model, "action": action, "body": body})
            for word, status, kind in [
                ("throttle", 429, "ThrottlingException"),
                ("notready", 429, "ModelNotReadyException"),
                ("denied", 403, "AccessDeniedException"),
                ("invalid", 400, "ValidationException"),
                ("unavailable", 503, "ServiceUnavailableException"),
            ]:
                if word in model:
                    self.send_json(status, {"message": f"mock {kind} for {model}"}, kind)
                    return
            if action == "invoke":
                text = body.get("inputText", "")
                vector = [float((len(text) + i) % 7) / 7.0 for i in range(8)]
                self.send_json(200, {"embedding": vector,
                                     "inputTextTokenCount": len(text.split())})
                return
            content, stop = self.answer(model, body)
            if action == "converse":
                self.send_json(200, {
                    "output": {"message": {"role": "assistant", "content": content}},
                    "stopReason": stop,
                    "usage": {"inputTokens": 11, "outputTokens": 7, "totalTokens": 18},
                    "metrics": {"latencyMs": 5},
                })
            elif action == "converse-stream":
                self.stream(model, content, stop)
            else:
                self.send_json(404, {"message": "unknown action"}, "UnknownOperationException")

        def answer(self, model, body):
            if "tools" in model:
                result = tool_result(body)
                if result is None:
                    return ([{"text": "Let me check."},
                             {"toolUse": {"toolUseId": "tooluse_mock1", "name": "weather",
                                          "input": {"city": "Paris"}}}], "tool_use")
                return [{"text": f"The weather in Paris: {result}."}], "end_turn"
            return ([{"text": f"Hello from {state.region}: you said: {last_user_text(body)}"}],
                    "end_turn")

        def stream(self, model, content, stop):
            frames = [event("messageStart", {"role": "assistant"})]
            for i, block in enumerate(content):
                if "text" in block:
                    text = block["text"]
                    third = max(1, len(text) // 3)
                    for piece in (text[:third], text[third:2 * third], text[2 * third:]):
                        frames.append(event("contentBlockDelta", {
                            "contentBlockIndex": i, "delta": {"text": piece}}))
                else:
                    use = block["toolUse"]
                    frames.append(event("contentBlockStart", {
                        "contentBlockIndex": i,
                        "start": {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}}))
                    args = json.dumps(use["input"])
                    half = len(args) // 2
                    for piece in (args[:half], args[half:]):
                        frames.append(event("contentBlockDelta", {
                            "contentBlockIndex": i, "delta": {"toolUse": {"input": piece}}}))
                frames.append(event("contentBlockStop", {"contentBlockIndex": i}))
            frames.append(event("messageStop", {"stopReason": stop}))
            frames.append(event("metadata", {
                "usage": {"inputTokens": 11, "outputTokens": 7, "totalTokens": 18},
                "metrics": {"latencyMs": 5}}))
            if "badcrc" in model:
                bad = bytearray(frames[1])
                bad[-1] ^= 0xFF
                frames[1] = bytes(bad)
            if "midstream" in model:
                frames = frames[:2] + [exception("modelStreamErrorException", "mock failure")]
            data = b"".join(frames)
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.amazon.eventstream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            # Written in pieces that cut frames at odd places, as a network would.
            step = 7
            for start in range(0, len(data), step):
                self.wfile.write(data[start:start + step])
                self.wfile.flush()

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--region", required=True)
    parser.add_argument("--access-key", required=True)
    parser.add_argument("--secret-key", required=True)
    parser.add_argument("--session-token")
    args = parser.parse_args()
    # The encoder checks itself against botocore's decoder before anything is served.
    event("messageStart", {"role": "assistant"})
    credentials = botocore.credentials.Credentials(
        args.access_key, args.secret_key, args.session_token)
    state = State(args.region, credentials)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
