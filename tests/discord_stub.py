"""A loopback stub of the Discord REST API, for end-to-end tests of the real discord.py client.

    stub = DiscordApiStub().start()
    discord.http.Route.BASE = stub.base_url          # every REST call (and webhook) goes here
    await client.login(TOKEN)                         # GET /users/@me, /oauth2/applications/@me; syncs the tree
    client._connection.parse_interaction_create(stub.command("compose", genre="calm"))
    [track] = await stub.wait_for("followup", files=True)

Interactions are either handed to the client's parser as the gateway would deliver
INTERACTION_CREATE (in-process tests), or sent over a loopback gateway websocket (HELLO, IDENTIFY →
READY, heartbeats ACKed) to a client in another process:

    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(stub.gateway_url)
    await stub.wait_for("identify"); stub.deliver(stub.command("help"))

The stub answers with Discord's JSON shapes and records each call (a name, the route, the JSON or
multipart payload, uploaded files); `forbidden_channels` answer 403 Missing Permissions, `flood`
answers a route's first calls 429 as Discord's rate limiter does, `errors` answers every call to a
route with a given error (an expired interaction token, say), and `attachment()` files are served
at their URL as the CDN serves a user's upload.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiohttp import WSMsgType, web

APP_ID = 900000000000000001
BOT_ID = APP_ID
GUILD_ID = 910000000000000001
CHANNEL_ID = 920000000000000001
OPTION_TYPES = {str: 3, int: 4, bool: 5, float: 10}
ROUTES = [  # (name, method, path pattern)
    ("me", "GET", r"/users/@me"),
    ("application", "GET", r"/oauth2/applications/@me"),
    ("sync", "PUT", r"/applications/\d+(?:/guilds/\d+)?/commands"),
    ("callback", "POST", r"/interactions/(?P<id>\d+)/(?P<token>[^/]+)/callback"),
    ("edit_original", "PATCH", r"/webhooks/\d+/(?P<token>[^/]+)/messages/@original"),
    ("delete_original", "DELETE", r"/webhooks/\d+/(?P<token>[^/]+)/messages/@original"),
    ("followup", "POST", r"/webhooks/\d+/(?P<token>[^/]+)"),
    ("channel_message", "POST", r"/channels/(?P<channel>\d+)/messages"),
    ("attachment", "GET", r"/attachments/\d+/(?P<id>\d+)/[^/]+"),  # the CDN, not the API
]


@dataclass
class Call:
    name: str
    path: str
    payload: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)  # filename → bytes
    match: dict[str, str] = field(default_factory=dict)
    response: dict[str, Any] | None = None

    @property
    def content(self) -> str:
        return self.payload.get("content") or ""

    @property
    def ephemeral(self) -> bool:
        data = self.payload.get("data") or self.payload
        return bool(int(data.get("flags") or 0) & 64)

    @property
    def custom_ids(self) -> list[str]:
        """The buttons' ids, of a message posted or of an interaction callback's answer."""
        rows = self.payload.get("components") or (self.payload.get("data") or {}).get("components") or []
        return [c["custom_id"] for row in rows for c in row.get("components", [])]

    @property
    def labels(self) -> list[str]:
        """The buttons' labels, as `custom_ids` lists them."""
        rows = self.payload.get("components") or (self.payload.get("data") or {}).get("components") or []
        return [c.get("label", "") for row in rows for c in row.get("components", [])]


class DiscordApiStub:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.forbidden_channels: set[int] = set()
        self.flood: dict[str, int] = {}  # route name → how many calls to answer 429 first
        self.errors: dict[str, tuple[int, dict[str, Any]]] = {}  # route name → (status, body) for every call
        # `flood` and `errors` keys may also be "name+files": only that route's calls that upload files
        self.on_call: Any = None  # called with each Call as it arrives, before it is answered (in the stub's thread)
        self.reject_token = False  # answer logging in 401, as for a revoked token
        self.close_on_identify: int | None = None  # a gateway close code to answer IDENTIFY with
        self.locales: dict[int, str] = {}  # user id → their Discord client's language (else en-US)
        self._uploads: dict[str, bytes] = {}  # attachment id → bytes, served at its URL
        self._lock = threading.Lock()
        self._ids = itertools.count(930000000000000001)
        self._server: ThreadingHTTPServer | None = None
        self._gateway = _Gateway(self)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> DiscordApiStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                stub._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="discord-api-stub", daemon=True).start()
        self._gateway.start()
        return self

    def stop(self) -> None:
        self._gateway.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self._gateway.port}/"

    def deliver(self, payload: dict[str, Any], event: str = "INTERACTION_CREATE") -> dict[str, Any]:
        """Send a dispatch to every identified gateway session (a client in any process)."""
        self._gateway.dispatch(event, payload)
        return payload

    # --- what tests use ------------------------------------------------------------------------

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def calls_to(self, name: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.name == name]

    async def wait_for(self, name: str, count: int = 1, timeout: float = 30.0, files: bool = False) -> list[Call]:
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.calls_to(name) if c.files or not files]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                seen = [(c.name, c.content[:60]) for c in self.calls]
                raise AssertionError(f"no {count} × {name} within {timeout} s; calls: {seen}")
            await asyncio.sleep(0.05)

    def replies(self) -> list[str]:
        """What users were told in text: immediate answers and follow-ups, in order."""
        with self._lock:
            calls = list(self.calls)
        texts = []
        for c in calls:
            if c.name == "callback" and c.payload.get("type") == 4:
                texts.append(c.payload["data"].get("content") or "")
            elif c.name == "followup" and c.content:
                texts.append(c.content)
        return texts

    async def wait_for_replies(self, count: int, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.replies()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} replies within {timeout} s: {self.replies()}")
            await asyncio.sleep(0.05)
        return self.replies()

    def next_id(self) -> int:
        return next(self._ids)

    @staticmethod
    def user(user_id: int = 1, name: str = "ada") -> dict[str, Any]:
        return {"id": str(user_id), "username": name, "discriminator": "0", "global_name": name.title(), "avatar": None}

    def interaction(
        self,
        kind: int,
        data: dict[str, Any],
        user_id: int = 1,
        dm: bool = False,
        permissions: int = (1 << 51) - 1,
        **extra,
    ) -> dict:
        """An INTERACTION_CREATE payload, in a guild text channel (where the user has `permissions`,
        as Discord resolved them for the channel) or in a DM."""
        iid = self.next_id()
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(APP_ID),
            "type": kind,
            "token": f"token-{iid}",
            "version": 1,
            "locale": self.locales.get(user_id, "en-US"),
            "app_permissions": str((1 << 51) - 1),
            "attachment_size_limit": 10 * 1024 * 1024,
            "entitlements": [],
            "data": data,
            **extra,
        }
        if dm:
            payload |= {
                "channel_id": str(user_id + 1000),
                "channel": {"id": str(user_id + 1000), "type": 1, "recipients": [self.user(user_id)]},
                "user": self.user(user_id),
                "context": 1,
                "authorizing_integration_owners": {"1": str(user_id)},
            }
        else:
            payload |= {
                "guild_id": str(GUILD_ID),
                "guild_locale": "en-US",
                "channel_id": str(CHANNEL_ID),
                "channel": self.channel(CHANNEL_ID),
                "member": {
                    "user": self.user(user_id),
                    "roles": [],
                    "joined_at": "2024-01-01T00:00:00+00:00",
                    "deaf": False,
                    "mute": False,
                    "flags": 0,
                    "permissions": str(permissions),
                },
                "context": 0,
                "authorizing_integration_owners": {"0": str(GUILD_ID)},
            }
        return payload

    @staticmethod
    def channel(channel_id: int, name: str = "music", permissions: int | None = None) -> dict[str, Any]:
        data = {
            "id": str(channel_id),
            "type": 0,
            "name": name,
            "guild_id": str(GUILD_ID),
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
        }
        return data if permissions is None else data | {"permissions": str(permissions)}

    def attachment(
        self, data: bytes, filename: str = "song.mid", size: int | None = None, served: bool = True
    ) -> dict[str, Any]:
        """A user's upload as Discord resolves it; its bytes are served at its URL (404 when not
        `served`, as for an expired link). `size` is what Discord declares (the real size unless given)."""
        aid = str(self.next_id())
        if served:
            self._uploads[aid] = data
        url = f"{self.root_url}/attachments/{CHANNEL_ID}/{aid}/{filename}"
        return {
            "id": aid,
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": url,
            "proxy_url": url,
            "content_type": "audio/midi" if filename.endswith((".mid", ".midi")) else "application/octet-stream",
        }

    def command(self, name: str, user_id: int = 1, dm: bool = False, channels: list[dict] | None = None, **options):
        """A slash command as Discord delivers it: typed options, resolved channels and attachments
        (a dict option is a channel, or an attachment when it has a filename)."""
        opts = []
        resolved: dict[str, dict[str, Any]] = {"channels": {c["id"]: c for c in channels or ()}}
        for key, value in options.items():
            if isinstance(value, dict):
                kind, group = (11, "attachments") if "filename" in value else (7, "channels")
                resolved.setdefault(group, {})[value["id"]] = value
                opts.append({"name": key, "type": kind, "value": value["id"]})
            else:
                opts.append({"name": key, "type": OPTION_TYPES[type(value)], "value": value})
        data: dict[str, Any] = {"id": str(self.next_id()), "name": name, "type": 1, "options": opts}
        if any(resolved.values()):
            data["resolved"] = {group: items for group, items in resolved.items() if items}
        return self.interaction(2, data, user_id, dm)

    def press(self, custom_id: str, message: dict[str, Any], user_id: int = 1, dm: bool = False, **extra: Any) -> dict:
        """A button press under a message the bot posted (its payload, components included);
        `extra` as for `interaction` (the presser's `permissions`, say)."""
        data = {"custom_id": custom_id, "component_type": 2}
        return self.interaction(3, data, user_id, dm, message=message, **extra)

    def choose(self, custom_id: str, message: dict[str, Any], channels: list[dict], user_id: int = 1, **extra) -> dict:
        """Channels chosen in a channel select under a message of the bot's, resolved as Discord
        resolves them (with the chooser's `permissions` there, when the channel dict has them)."""
        data = {
            "custom_id": custom_id,
            "component_type": 8,
            "values": [c["id"] for c in channels],
            "resolved": {"channels": {c["id"]: c for c in channels}},
        }
        return self.interaction(3, data, user_id, message=message, **extra)

    def pick(self, custom_id: str, message: dict[str, Any], values: list[str], user_id: int = 1, **extra) -> dict:
        """Options picked in a string select under a message of the bot's (its payload, components
        included); `extra` as for `interaction`."""
        data = {"custom_id": custom_id, "component_type": 3, "values": values}
        return self.interaction(3, data, user_id, message=message, **extra)

    def submit(self, custom_id: str, values: dict[str, str], user_id: int = 1, **extra: Any) -> dict:
        """A modal the bot opened, submitted with these text inputs' values (by their custom ids)."""
        rows = [{"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in values.items()]
        return self.interaction(5, {"custom_id": custom_id, "components": rows}, user_id, **extra)

    def posted(self, *custom_ids: str, channel_id: int = CHANNEL_ID) -> dict[str, Any]:
        """A message of the bot's with buttons of these ids, as if posted earlier (to press them)."""
        buttons = [{"type": 2, "style": 2, "label": i, "custom_id": i} for i in custom_ids]
        return self._message(channel_id, {"components": [{"type": 1, "components": buttons}]})

    def posted_select(self, custom_id: str, values: list[str], channel_id: int = CHANNEL_ID) -> dict[str, Any]:
        """A message of the bot's with a string select of these options, as if posted earlier."""
        select = {"type": 3, "custom_id": custom_id, "options": [{"label": v, "value": v} for v in values]}
        return self._message(channel_id, {"components": [{"type": 1, "components": [select]}]})

    def posted_channel_select(self, custom_id: str, channel_id: int = CHANNEL_ID) -> dict[str, Any]:
        """A message of the bot's with a channel select, as if posted earlier."""
        select = {"type": 8, "custom_id": custom_id}
        return self._message(channel_id, {"components": [{"type": 1, "components": [select]}]})

    def answered_message(self, callback: Call) -> dict[str, Any]:
        """The message an interaction callback (an immediate answer) put up, to press its buttons."""
        return self._message(CHANNEL_ID, callback.payload.get("data") or {})

    # --- the server side -----------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?")[0].removeprefix("/api/v10")
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        payload, files = _decode(request.headers.get("Content-Type", ""), body)
        for name, method, pattern in ROUTES:
            m = re.fullmatch(pattern, path)
            if m and method == request.command:
                call = Call(name, path, payload, files, m.groupdict())
                break
        else:
            call = Call(f"unknown {request.command}", path, payload, files)
        status, answer = self._answer(call)
        call.response = answer if isinstance(answer, dict) else None
        self.record(call)
        data = answer if isinstance(answer, bytes) else b"" if answer is None else json.dumps(answer).encode()
        request.send_response(status)
        if data:
            request.send_header("Content-Type", "application/octet-stream" if answer is data else "application/json")
        if status == 429:
            request.send_header("Via", "1.1 google")  # discord.py reads a 429 without it as a Cloudflare ban
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def _answer(self, call: Call) -> tuple[int, Any]:
        if self.on_call is not None:
            self.on_call(call)
        keys = [call.name, f"{call.name}+files"] if call.files else [call.name]
        with self._lock:
            flooded = next((k for k in keys if self.flood.get(k, 0) > 0), None)
            if flooded:
                self.flood[flooded] -= 1
        if flooded:
            return 429, {"message": "You are being rate limited.", "retry_after": 0.3, "global": False, "code": 0}
        for key in keys:
            if key in self.errors:
                return self.errors[key]
        if call.name == "attachment":
            upload = self._uploads.get(call.match["id"])
            return (200, upload) if upload is not None else (404, {"message": "Unknown attachment", "code": 0})
        if call.name == "me" and self.reject_token:
            return 401, {"message": "401: Unauthorized", "code": 0}
        if call.name == "me":
            return 200, self.user(BOT_ID, "melomania") | {"bot": True}
        if call.name == "application":
            return 200, {
                "id": str(APP_ID),
                "name": "Melomania",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.user(2, "owner"),
                "verify_key": "0" * 64,
                "flags": 0,
            }
        if call.name == "sync":
            commands = call.payload if isinstance(call.payload, list) else call.payload.get("_list", [])
            return 200, [
                {"type": 1, "version": "1", **c, "id": str(self.next_id()), "application_id": str(APP_ID)}
                for c in commands
            ]
        if call.name == "callback":
            kind = call.payload.get("type")
            flags = int((call.payload.get("data") or {}).get("flags") or 0)
            return 200, {
                "interaction": {
                    "id": call.match["id"],
                    "type": 2,
                    "response_message_id": str(self.next_id()),
                    "response_message_loading": kind == 5,
                    "response_message_ephemeral": bool(flags & 64),
                },
                "resource": {"type": kind},
            }
        if call.name in ("edit_original", "followup"):
            return 200, self._message(CHANNEL_ID, call.payload)
        if call.name == "delete_original":
            return 204, None
        if call.name == "channel_message":
            channel = int(call.match["channel"])
            if channel in self.forbidden_channels:
                return 403, {"message": "Missing Permissions", "code": 50013}
            return 200, self._message(channel, call.payload)
        return 404, {"message": f"{call.path} is not in the stub", "code": 0}

    def _message(self, channel_id: int, payload: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": str(self.next_id()),
            "channel_id": str(channel_id),
            "type": 0,
            "content": payload.get("content") or "",
            "author": self.user(BOT_ID, "melomania") | {"bot": True},
            "attachments": [],
            "embeds": payload.get("embeds") or [],
            "components": payload.get("components") or [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": "2024-01-01T00:00:00+00:00",
            "edited_timestamp": None,
            "flags": int(payload.get("flags") or 0),
            "application_id": str(APP_ID),
            "webhook_id": str(APP_ID),
        }


def _decode(content_type: str, body: bytes) -> tuple[Any, dict[str, bytes]]:
    """JSON or multipart (payload_json plus files[n]) → (payload, filename → bytes)."""
    if content_type.startswith("multipart/form-data"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        payload: Any = {}
        files: dict[str, bytes] = {}
        for part in message.iter_parts():
            data = part.get_payload(decode=True) or b""
            if part.get_filename() is not None:
                files[part.get_filename()] = data
            elif part.get_param("name", header="content-disposition") == "payload_json":
                payload = json.loads(data)
        return payload, files
    if body:
        data = json.loads(body)
        return (data if isinstance(data, dict) else {"_list": data}), {}
    return {}, {}


class _Gateway:
    """A loopback gateway websocket (aiohttp, in its own thread and loop): HELLO, IDENTIFY → READY,
    heartbeats ACKed, and dispatches the test sends. Each IDENTIFY and each closed session is
    recorded as a call ("identify", "gateway_closed" with the close code)."""

    def __init__(self, stub: DiscordApiStub) -> None:
        self.stub = stub
        self.loop = asyncio.new_event_loop()
        self.sessions: list[web.WebSocketResponse] = []
        self.seq = itertools.count(1)
        self.port = 0
        self._runner: web.AppRunner | None = None

    def start(self) -> None:
        threading.Thread(target=self.loop.run_forever, name="discord-gateway-stub", daemon=True).start()
        self.port = asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        async def send() -> int:
            for ws in list(self.sessions):
                await ws.send_json({"op": 0, "t": event, "s": next(self.seq), "d": data})
            return len(self.sessions)

        if not asyncio.run_coroutine_threadsafe(send(), self.loop).result(10):
            raise AssertionError(f"no client is connected to the gateway to receive {event}")

    async def _serve(self) -> int:
        app = web.Application()
        app.router.add_get("/", self._session)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return self._runner.addresses[0][1]

    async def _session(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            frame = json.loads(message.data)
            if frame.get("op") == 1:  # heartbeat
                await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
            elif frame.get("op") == 2:  # identify
                self.stub.record(Call("identify", "/gateway", frame["d"]))
                if self.stub.close_on_identify is not None:
                    await ws.close(code=self.stub.close_on_identify, message=b"closed by the stub")
                    break
                self.sessions.append(ws)
                await ws.send_json({"op": 0, "t": "READY", "s": next(self.seq), "d": self._ready()})
        if ws in self.sessions:
            self.sessions.remove(ws)
        self.stub.record(Call("gateway_closed", "/gateway", {"code": ws.close_code}))
        return ws

    def _ready(self) -> dict[str, Any]:
        return {
            "v": 10,
            "user": self.stub.user(BOT_ID, "melomania") | {"bot": True},
            "guilds": [],
            "session_id": f"session-{self.stub.next_id()}",
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/",
            "application": {"id": str(APP_ID), "flags": 0},
        }
