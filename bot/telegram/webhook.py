"""Where Telegram posts updates, for `Application.run_webhook`, checked before anything loads."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bot.grammar import UsageError

WEBHOOK_PORTS = (443, 80, 88, 8443)  # the only ports Telegram delivers webhooks to
SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what Telegram accepts as a webhook secret


@dataclass(frozen=True)
class Webhook:
    """Where Telegram posts updates (`url`, public https) and where we listen for them (usually
    behind a proxy that terminates TLS). The secret never shows in a repr or a log line."""

    url: str
    listen: str
    port: int
    secret_token: str = field(repr=False)

    def run_options(self) -> dict[str, Any]:
        """Keyword arguments for `Application.run_webhook` (or `Updater.start_webhook`)."""
        return {
            "listen": self.listen,
            "port": self.port,
            "url_path": urlsplit(self.url).path.strip("/"),
            "webhook_url": self.url,
            "secret_token": self.secret_token,
        }


def webhook_from(
    url: str | None, listen: str = "127.0.0.1", port: int = 8443, secret: str | None = None
) -> Webhook | None:
    """None (long polling, the default) without a URL; else the webhook, or UsageError saying
    what to fix. Neither the URL nor the secret is repeated in an error: either may be private."""
    if not url or not url.strip():
        return None
    parts = urlsplit(url.strip())
    try:
        public_port = parts.port
    except ValueError:
        public_port = -1
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError("MELOMANIA_TELEGRAM_WEBHOOK_URL must be a public https:// URL (Telegram only calls https)")
    if public_port is not None and public_port not in WEBHOOK_PORTS:
        raise UsageError("MELOMANIA_TELEGRAM_WEBHOOK_URL must use port 443, 80, 88 or 8443 (the ones Telegram calls)")
    if secret is not None and not SECRET_TOKEN.fullmatch(secret):
        raise UsageError("MELOMANIA_TELEGRAM_WEBHOOK_SECRET may hold only A-Z, a-z, 0-9, _ and -, 1 to 256 of them")
    # Without a configured secret, a fresh one each start: Telegram gets it with setWebhook, and
    # requests that do not carry it are refused, so nobody else can post updates to us.
    return Webhook(parts.geturl(), listen, port, secret or secrets.token_urlsafe(32))
