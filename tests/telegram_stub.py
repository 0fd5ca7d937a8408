"""A loopback stub of the Telegram Bot API, for end-to-end tests of the real python-telegram-bot.

    stub = BotApiStub().start()
    Application.builder().token(TOKEN).base_url(stub.base_url).base_file_url(stub.file_url).build()
    stub.queue_update({"update_id": 1, "message": stub.message("/compose ambient")})
    call = await stub.wait_for("sendAudio")

It runs a stdlib HTTP server in a thread, answers every method with the Bot API's JSON shapes
(`{"ok": true, "result": …}`) and records each call (method, parameters, uploaded files).
getUpdates serves queued updates in order, long-polling briefly when there are none; it serves
whatever was queued, so a test can redeliver an update by queueing it again. Files users sent
(`stub.document(...)`) are served by getFile and at the download URL under `file_url`.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

BOT_ID = 777000
BOT_USERNAME = "melomania_bot"
MAX_POLL_S = 0.5  # however long the bot asks to long-poll, the stub answers within this
CHUNK = 64 * 1024  # a download is written this much at a time


@dataclass
class Call:
    method: str
    params: dict[str, str]
    files: dict[str, bytes] = field(default_factory=dict)
    token: str = ""  # the bot token the call was made with (/bot<token>/<method>)
    result: Any = None  # what the stub answered (a sent message, a list of them for an album)
    at: float = field(default_factory=time.monotonic)  # when the call arrived

    def json(self, name: str) -> Any:
        """A parameter the client sent JSON-encoded (reply_markup, chat_id as a number, …)."""
        return json.loads(self.params[name])

    @property
    def chat_id(self) -> str:
        return self.params.get("chat_id", "")

    @property
    def buttons(self) -> list[str]:
        """The callback data of every inline button, row by row ("pick:<query>" for a button that
        opens the chat picker with an inline query)."""
        markup = self.json("reply_markup") if "reply_markup" in self.params else {}

        def data(b: dict[str, Any]) -> str:
            if "switch_inline_query_chosen_chat" in b:
                return "pick:" + b["switch_inline_query_chosen_chat"].get("query", "")
            return b.get("callback_data", "")

        return [data(b) for row in markup.get("inline_keyboard", []) for b in row]

    @property
    def labels(self) -> list[str]:
        """The text of every inline button, row by row."""
        markup = self.json("reply_markup") if "reply_markup" in self.params else {}
        return [b["text"] for row in markup.get("inline_keyboard", []) for b in row]

    @property
    def replied_to(self) -> int | None:
        """The message this one was sent in reply to."""
        if "reply_parameters" in self.params:
            return int(self.json("reply_parameters")["message_id"])
        return int(self.params["reply_to_message_id"]) if "reply_to_message_id" in self.params else None


class BotApiStub:
    def __init__(self, member_status: str = "member"):
        self.calls: list[Call] = []
        self.member_status = member_status  # what getChatMember answers
        self.can_post_messages = False  # an administrator's right to post in a channel
        self.chat_types: dict[str, str] = {}  # chat id → getChat's type; "@name" is a channel otherwise
        self.flood: dict[str, int] = {}  # method → how many calls to answer 429 Too Many Requests first
        self.unreachable: set[str] = set()  # chat ids the bot may not write to (never started it): 403
        self.outage: dict[str, int] = {}  # method → how many calls to answer 502 Bad Gateway first
        self.slow: dict[str, float] = {}  # chat id → seconds every send* call to it takes to answer
        self.languages: dict[int, str] = {}  # user id → the language_code their Telegram app sends
        self._updates: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._message_ids = itertools.count(1000)
        self._file_ids = itertools.count(1)
        self.files: dict[str, bytes] = {}  # file_id → the bytes a user sent, for getFile and downloads
        self.unsized: set[str] = set()  # file ids whose getFile declares no file_size
        self.served: dict[str, int] = {}  # file_id → bytes the download actually wrote before the reader left
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> BotApiStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                stub._handle(self)

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="bot-api-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/bot"

    @property
    def file_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/file/bot"

    # --- what tests use ------------------------------------------------------------------------

    def queue_update(self, *updates: dict[str, Any]) -> None:
        """Updates for the next getUpdates, in order (several: served in one answer)."""
        with self._cond:
            self._updates.extend(updates)
            self._cond.notify_all()

    def live_messages(self, chat_id: str) -> list[Call]:
        """The calls whose messages are still in the chat: sent by the bot there, never deleted,
        one entry a message (an album counts each of its messages)."""
        with self._cond:
            deleted = {(c.chat_id, int(c.params["message_id"])) for c in self.calls if c.method == "deleteMessage"}
            deleted |= {
                (c.chat_id, m) for c in self.calls if c.method == "deleteMessages" for m in c.json("message_ids")
            }
            live = []
            for c in self.calls:
                if not c.method.startswith("send") or c.method == "sendChatAction" or c.result is None:
                    continue
                for sent in c.result if isinstance(c.result, list) else [c.result]:
                    if (c.chat_id, sent["message_id"]) not in deleted:
                        live.append(c)
            return live

    def calls_to(self, method: str) -> list[Call]:
        with self._cond:
            return [c for c in self.calls if c.method == method]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 30.0, **where: str) -> list[Call]:
        """Wait until `count` calls of `method` (whose parameters include `where`) were made."""
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.calls_to(method) if all(c.params.get(k) == v for k, v in where.items())]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                seen = [(c.method, c.params.get("text", "")[:60]) for c in self.calls if c.method != "getUpdates"]
                raise AssertionError(f"no {count} × {method} {where} within {timeout} s; calls: {seen}")
            await asyncio.sleep(0.05)

    def user(self, user_id: int = 1, name: str = "Ada") -> dict[str, Any]:
        language = self.languages.get(user_id)
        return {"id": user_id, "is_bot": False, "first_name": name} | ({"language_code": language} if language else {})

    @staticmethod
    def chat(chat_id: int = 1, kind: str = "private") -> dict[str, Any]:
        return {"id": chat_id, "type": kind} | ({"first_name": "Ada"} if kind == "private" else {"title": "A group"})

    def message(self, text: str, user_id: int = 1, chat_id: int | None = None, kind: str = "private") -> dict:
        """A user's text message as Telegram delivers it (commands get their bot_command entity)."""
        msg: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": self.chat(chat_id if chat_id is not None else user_id, kind),
            "from": self.user(user_id),
            "text": text,
        }
        if text.startswith("/"):
            msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return msg

    def document(
        self,
        data: bytes,
        name: str = "tune.mid",
        mime: str = "audio/midi",
        user_id: int = 1,
        sized: tuple[bool, bool] = (True, True),
        **kw: Any,
    ) -> dict[str, Any]:
        """A user's message with a file attached; getFile and the download URL serve its bytes.
        `sized`: whether the message and getFile declare its size (Telegram's is optional in both)."""
        n = next(self._file_ids)
        file_id, unique = f"USERDOC{n}", f"UUSERDOC{n}"
        self.files[file_id] = data
        if not sized[1]:
            self.unsized.add(file_id)
        msg = self.message("", user_id, **kw)
        del msg["text"]
        doc = {"file_id": file_id, "file_unique_id": unique} | ({"file_size": len(data)} if sized[0] else {})
        msg["document"] = doc | ({"file_name": name} if name else {}) | ({"mime_type": mime} if mime else {})
        return msg

    def reply(self, text: str, to: dict[str, Any], user_id: int = 1) -> dict[str, Any]:
        """A user's text message in reply to `to` (a message from `message` or `document`)."""
        msg = self.message(text, user_id, chat_id=to["chat"]["id"], kind=to["chat"]["type"])
        msg["reply_to_message"] = to
        return msg

    def inline(self, query: str, user_id: int = 1, offset: str = "") -> dict[str, Any]:
        """Someone typing "@bot <query>" in any chat."""
        return {"id": str(next(self._message_ids)), "from": self.user(user_id), "query": query, "offset": offset}

    def callback(self, data: str | None, user_id: int = 1, message: dict | None = None) -> dict[str, Any]:
        """A press of an inline button under a message the bot sent (`data` None: a press that
        carries none, as Telegram sends for a game's button)."""
        press = {
            "id": str(next(self._message_ids)),
            "from": self.user(user_id),
            "chat_instance": "ci",
            "message": message or self._bot_message(user_id, {"text": "a track"}),
        }
        return press | ({"data": data} if data is not None else {})

    # --- the server side -----------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        if request.path.startswith("/file/"):
            self._download(request)
            return
        parts = request.path.strip("/").split("/")
        method = parts[-1] if parts else ""
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        params, files = _decode(request.headers.get("Content-Type", ""), body)
        token = parts[-2].removeprefix("bot") if len(parts) >= 2 else ""
        call = Call(method, params, files, token)
        if method != "getUpdates":
            with self._cond:
                self.calls.append(call)
        try:
            if method.startswith("send") and str(params.get("chat_id")) in self.unreachable:
                payload = {
                    "ok": False,
                    "error_code": 403,
                    "description": "Forbidden: bot can't initiate conversation with a user",
                }
                status = 403
            elif self.outage.get(method):
                self.outage[method] -= 1
                payload = {"ok": False, "error_code": 502, "description": "Bad Gateway"}
                status = 502
            elif self.flood.get(method):
                self.flood[method] -= 1
                payload = {
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests: retry after 1",
                    "parameters": {"retry_after": 1},
                }
                status = 429
            else:
                payload = {"ok": True, "result": self._answer(method, params, files)}
                call.result = payload["result"]
                status = 200
        except LookupError as exc:
            payload = {"ok": False, "error_code": 400, "description": f"Bad Request: {exc}"}
            status = 400
        if method.startswith("send") and str(params.get("chat_id")) in self.slow:
            time.sleep(self.slow[str(params["chat_id"])])  # a thread of the server's: the others go on
        data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def _answer(self, method: str, params: dict[str, str], files: dict[str, bytes]) -> Any:
        if method == "getMe":
            return {
                "id": BOT_ID,
                "is_bot": True,
                "first_name": "Melomania",
                "username": BOT_USERNAME,
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": True,
            }
        if method in ("deleteWebhook", "setWebhook", "setMyCommands", "answerCallbackQuery", "answerInlineQuery"):
            return True
        if method in ("deleteMessage", "deleteMessages", "sendChatAction"):
            return True
        if method == "sendMediaGroup":
            album = []
            for item in json.loads(params["media"]):
                media = str(item.get("media", ""))
                attached = files.get(media.removeprefix("attach://"))
                if item.get("type") == "audio":
                    sent = {k: str(v) for k, v in item.items()} | {"audio": media}
                    uploaded = {"audio": attached} if attached is not None else {}
                    content = {"audio": self._audio(sent, uploaded), "caption": item.get("caption", "")}
                else:
                    n = next(self._file_ids)
                    content = {
                        "document": {
                            "file_id": f"DOC{n}",
                            "file_unique_id": f"UDOC{n}",
                            "file_size": len(attached or b""),
                        }
                    }
                album.append(self._bot_message(params["chat_id"], content | {"media_group_id": "album"}))
            return album
        if method == "getFile":
            file_id = params.get("file_id", "")
            if file_id not in self.files:
                raise LookupError("invalid file_id")
            size = {} if file_id in self.unsized else {"file_size": len(self.files[file_id])}
            path = f"documents/{file_id}.mid"
            return {"file_id": file_id, "file_unique_id": f"U{file_id}", "file_path": path} | size
        if method == "getUpdates":
            return self._serve_updates(float(params.get("timeout", 0) or 0))
        if method == "sendMessage":  # the sent message comes back with its buttons, as Telegram's does
            markup = json.loads(params.get("reply_markup") or "{}")
            buttons = {"reply_markup": markup} if markup.get("inline_keyboard") else {}
            return self._bot_message(params["chat_id"], {"text": params.get("text", "")} | buttons)
        if method == "editMessageText":
            msg = self._bot_message(params.get("chat_id", "0"), {"text": params.get("text", "")})
            msg["message_id"] = int(params.get("message_id", msg["message_id"]))
            msg["edit_date"] = int(time.time())
            return msg
        if method == "editMessageReplyMarkup":
            msg = self._bot_message(params.get("chat_id", "0"), {"text": "a track"})
            msg["message_id"] = int(params.get("message_id", msg["message_id"]))
            if "reply_markup" in params:
                msg["reply_markup"] = json.loads(params["reply_markup"])
            return msg
        if method == "sendAudio":
            return self._bot_message(params["chat_id"], {"audio": self._audio(params, files), "caption": ""})
        if method == "sendDocument":
            doc = files.get("document", b"")
            return self._bot_message(
                params["chat_id"],
                {
                    "document": {
                        "file_id": f"DOC{next(self._file_ids)}",
                        "file_unique_id": "UDOC",
                        "file_size": len(doc),
                    }
                },
            )
        if method == "sendPhoto":
            photo = files.get("photo", b"")
            return self._bot_message(
                params["chat_id"],
                {
                    "photo": [
                        {
                            "file_id": f"PHOTO{next(self._file_ids)}",
                            "file_unique_id": "UPHOTO",
                            "width": 960,
                            "height": 320,
                            "file_size": len(photo),
                        }
                    ]
                },
            )
        if method == "getChatMember":
            member: dict[str, Any] = {"status": self.member_status, "user": self.user(int(params["user_id"]))}
            if self.member_status == "kicked":
                member["until_date"] = 0  # banned for ever
            if self.member_status == "restricted":  # a muted member: in the group, may not send anything
                sends = ("messages", "audios", "documents", "photos", "videos", "video_notes", "voice_notes", "polls")
                rights = ("change_info", "invite_users", "pin_messages", "manage_topics", "add_web_page_previews")
                rights += ("edit_tag", "react_to_messages")
                member |= {f"can_send_{r}": False for r in (*sends, "other_messages")}
                member |= {f"can_{r}": False for r in rights} | {"is_member": True, "until_date": 0}
            if self.member_status == "administrator":  # the rights Telegram always lists for one
                rights = ("manage_chat", "delete_messages", "manage_video_chats", "restrict_members")
                rights += ("promote_members", "change_info", "invite_users", "post_stories", "edit_stories")
                member |= {f"can_{r}": False for r in (*rights, "delete_stories", "be_edited")}
                member |= {"is_anonymous": False, "can_post_messages": self.can_post_messages}
            return member
        if method == "getChat":
            chat_id = str(params["chat_id"])
            kind = self.chat_types.get(chat_id, "channel" if chat_id.startswith("@") else "group")
            numeric = -1001234567890 if chat_id.startswith("@") else int(chat_id)
            return {"id": numeric, "type": kind, "title": chat_id, "accent_color_id": 0, "max_reaction_count": 11}
        raise LookupError(f"method {method} is not in the stub")

    def _download(self, request: BaseHTTPRequestHandler) -> None:
        """GET <file_url><token>/documents/<file_id>.mid, as Telegram serves files getFile named."""
        with self._cond:
            self.calls.append(Call("download", {"path": request.path}))
        file_id = request.path.rsplit("/", 1)[-1].removesuffix(".mid")
        data = self.files.get(file_id)
        request.send_response(200 if data is not None else 404)
        request.send_header("Content-Type", "application/octet-stream")
        request.send_header("Content-Length", str(len(data or b"")))
        request.end_headers()
        written = 0
        try:  # in pieces, as a file server streams it, so a reader that stops early is seen to
            for at in range(0, len(data or b""), CHUNK):
                request.wfile.write(data[at : at + CHUNK])
                request.wfile.flush()
                written += len(data[at : at + CHUNK])
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.served[file_id] = written

    def _serve_updates(self, timeout: float) -> list[dict[str, Any]]:
        with self._cond:
            if not self._updates:
                self._cond.wait(min(timeout, MAX_POLL_S))
            served, self._updates = self._updates, []
            return served

    def _audio(self, params: dict[str, str], files: dict[str, bytes]) -> dict[str, Any]:
        uploaded = files.get("audio")
        file_id = params.get("audio") if uploaded is None else f"AUDIO{next(self._file_ids)}"
        return {
            "file_id": file_id,
            "file_unique_id": f"U{file_id}",
            "duration": int(params.get("duration", 0) or 0),
            "performer": params.get("performer"),
            "title": params.get("title"),
            "mime_type": "audio/mpeg",
            "file_size": len(uploaded or b""),
        }

    def _bot_message(self, chat_id: str | int, content: dict[str, Any]) -> dict[str, Any]:
        chat = str(chat_id)
        numeric = int(chat) if chat.lstrip("-").isdigit() else -1000000000000 - (hash(chat) % 10**9)
        kind = "private" if numeric > 0 else ("channel" if chat.startswith("@") else "supergroup")
        chat_obj: dict[str, Any] = {"id": numeric, "type": kind}
        if kind != "private":
            chat_obj["title"] = chat
        return {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat_obj,
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Melomania", "username": BOT_USERNAME},
            **content,
        }


def _decode(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """Form, multipart or JSON parameters → (text parameters, uploaded files)."""
    if content_type.startswith("multipart/form-data"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        params: dict[str, str] = {}
        files: dict[str, bytes] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            if part.get_filename() is not None:
                files[name] = payload
            else:
                params[name] = payload.decode()
        return params, files
    if content_type.startswith("application/json"):
        data = json.loads(body or b"{}")
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}, {}
    return dict(parse_qsl(body.decode(), keep_blank_values=True)), {}
