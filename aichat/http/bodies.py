"""Every request body and list route's paging, declared once.

Handlers parse with these (`REGISTRATION.parse(body)`), and aichat.http.openapi builds the
request schemas and the page/limit parameters from the same objects, so a limit cannot differ
between the check and the document. Field types and their messages: aichat.http.fields.
"""

from __future__ import annotations

import functools

from aichat.http.fields import (MIB, Body, Bool, Checked, Choice, Content, Field, Id, Images, Int,
                               Price,
                                Text, Url)
from aichat.http.validate import Paging
from aichat.security.accounts import (DIGIT, LETTER, PASSWORD_MIN_BYTES, USERNAME,
                                      valid_password, valid_username)
from aichat.security.passwords import MAX_BYTES
from aichat.settings.table import BY_KEY, MAX_TOKENS, RUNTIME, Setting

ROLES = ("ADMIN", "USER")
THEMES = ("light", "dark", "system")
NEW_PASSWORD_RULE = "newPassword must be at least 8 characters with letters and numbers"

# An ASCII letter and a digit take a byte each; the other bytes need at least a character per 4.
_PASSWORD_MIN_CHARS = 2 + -(-(PASSWORD_MIN_BYTES - 2) // 4)
_PASSWORD = {"type": "string", "minLength": _PASSWORD_MIN_CHARS, "maxLength": MAX_BYTES,
             "allOf": [{"pattern": LETTER.pattern}, {"pattern": DIGIT.pattern}],
             "description": f"{PASSWORD_MIN_BYTES}-{MAX_BYTES} UTF-8 bytes (so "
                            f"{_PASSWORD_MIN_CHARS}-{MAX_BYTES} characters) with an ASCII letter "
                            "and a digit."}
_USERNAME = {"type": "string", "pattern": f"^{USERNAME.pattern}$"}
_ANY_TEXT = Text(lo=0, blank=True)  # checked elsewhere: a wrong password is a 400/401, not a rule

CREDENTIALS = Body("Credentials", username=_ANY_TEXT, password=_ANY_TEXT)
REGISTRATION = Body("Registration", username=Checked(rule=valid_username, spec=_USERNAME),
                    password=Checked(rule=valid_password, spec=_PASSWORD))
PASSWORD_CHANGE = Body(
    "PasswordChange", currentPassword=_ANY_TEXT,
    newPassword=Checked(rule=functools.partial(valid_password, rule=NEW_PASSWORD_RULE),
                        spec=_PASSWORD))
ROLE_CHANGE = Body("RoleChange", role=Choice(ROLES))


PRICE_DOC = ("Price of a million {} tokens in the system `currency`, at most 6 decimals; "
             "absent or null: none (rounds cost null). In an update, null removes it.")
PRICES = ("inputPricePerMTok", "outputPricePerMTok")


def _model(create: bool) -> dict[str, Field]:
    """A model config's fields: all but supportsImages required on create, none on update."""
    return {
        "name": Text(hi=100, required=create, doc="Also the upstream `model` id."),
        "apiUrl": Url(required=create, doc="Absolute http(s) URL of the chat-completions "
                                           "endpoint, without whitespace or control characters."),
        "apiKey": Text(hi=4096, blank=True, required=create,
                       doc="Stored encrypted, never returned."),
        "supportsImages": Bool(required=False, default=False if create else None),
        "inputPricePerMTok": Price(required=False, doc=PRICE_DOC.format("prompt")),
        "outputPricePerMTok": Price(required=False, doc=PRICE_DOC.format("completion")),
    }


MODEL_CREATE = Body("ModelCreate", **_model(create=True))
MODEL_UPDATE = Body("ModelUpdate", **_model(create=False))

TITLE_MAX = 200
SESSION_CREATE = Body("SessionCreate", modelConfigId=Id(),
                      title=Text(hi=TITLE_MAX, required=False, default="New Chat"))
SESSION_RENAME = Body("SessionRename", title=Text(hi=TITLE_MAX))
SESSION_REF = Body("SessionRef", sessionId=Id())

# docs/api.md §5.1: a message of at most 10000 characters with up to 4 images of 5 MiB each.
CHAT_IMAGES = Images(max_items=4, max_bytes=5 * MIB, required=False)
CHAT = Body("ChatRequest", sessionId=Id(), content=Content(hi=10000), images=CHAT_IMAGES)
REGENERATE = Body("RegenerateRequest", sessionId=Id(), messageId=Id(required=False))

PERSONAL_SETTINGS = Body("PersonalSettingsUpdate",
                         context_token_limit=Int(lo=1000, hi=32000, required=False),
                         theme=Choice(THEMES, required=False))
API_KEY_CREATE = Body("ApiKeyCreate", name=Text(hi=100),
                      expiresInDays=Int(lo=1, hi=3650, required=False),
                      tokensPerMonth=Int(lo=1, hi=MAX_TOKENS, required=False,
                                         doc="The key's own token limit per UTC calendar "
                                             "month, within its owner's (docs/api.md §9)."))


def _limit(key: str) -> Field:
    row = BY_KEY[key]
    assert row.hi is not None
    if row.kind == "money":
        return Price(hi=row.hi, required=False)
    return Int(lo=row.lo, hi=row.hi, required=False)


# docs/api.md §9: a user's own limits, each the system default's range.
USER_LIMITS = Body(
    "UserLimits",
    "Partial: an absent key keeps the user's limit; `null` returns it to the system default.",
    requestsPerMinute=_limit("default_requests_per_minute"),
    tokensPerDay=_limit("default_tokens_per_day"),
    tokensPerMonth=_limit("default_tokens_per_month"),
    costPerMonth=_limit("default_cost_per_month"),
    maxConcurrentStreams=_limit("max_concurrent_streams"))


def setting_field(row: Setting) -> Field:
    """How PUT /api/settings/system checks a run-time setting of aichat.settings.table."""
    if row.kind == "bool":
        return Bool(required=False)
    if row.kind == "int":
        assert row.hi is not None
        return Int(lo=row.lo, hi=row.hi, required=False)
    if row.kind == "choice":
        return Choice(row.choices, required=False)
    if row.kind == "money":
        assert row.hi is not None
        return Price(hi=row.hi, required=False)
    return Text(lo=row.lo, hi=row.hi, blank=row.lo == 0, rule=row.check, typed=False,
                required=False)


SYSTEM_SETTINGS = Body(
    "SystemSettingsUpdate",
    "Partial: an absent key keeps its value; a value is stored as the admin's (source "
    "`admin`), even one equal to the current value; `null` returns the setting to its "
    "environment variable or default (the stored value is deleted). Unknown keys, such as "
    "GET's `sources`, `app_mode` and `max_context_tokens`, are ignored.",
    **{row.key: setting_field(row) for row in RUNTIME})

ALL = (CREDENTIALS, REGISTRATION, PASSWORD_CHANGE, ROLE_CHANGE, MODEL_CREATE, MODEL_UPDATE,
       SESSION_CREATE, SESSION_RENAME, SESSION_REF, CHAT, REGENERATE, PERSONAL_SETTINGS,
       API_KEY_CREATE, SYSTEM_SETTINGS, USER_LIMITS)

USERS_PAGE = Paging(default_limit=10, max_limit=100)
SESSIONS_PAGE = Paging(default_limit=20, max_limit=100)
MESSAGES_PAGE = Paging(default_limit=1000, max_limit=1000)
AUDIT_PAGE = USERS_PAGE  # the audit log is paged exactly like the users list
