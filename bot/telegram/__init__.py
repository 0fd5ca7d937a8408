"""The Telegram front end: an adapter from updates to the command service (`bot.core`) and back.

app = build_application(token, runner, db, store)
app.run_polling()   # or, with a public https URL: app.run_webhook(**webhook.run_options())
"""

from bot.telegram.app import build_application
from bot.telegram.webhook import Webhook, webhook_from

__all__ = ["Webhook", "build_application", "webhook_from"]
