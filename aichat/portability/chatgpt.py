"""ChatGPT's `conversations.json` read as an import plan.

A conversation's `mapping` is a tree of nodes (id -> {message | null, parent, children}): an
edited message or a regenerated reply adds a sibling branch. The branch imported is the one
ChatGPT shows: from `current_node` up through the parents to the root, reversed (without a
`current_node`, from the leaf with the newest message). Every node is checked, on the branch
or not, so a malformed file is refused whole.

Kept: user and assistant messages of text (`text`, `multimodal_text`: their string parts,
joined by blank lines). Skipped and counted (plan.SKIPPED): system and tool messages (an
assistant message addressed to a tool counts as a tool message), hidden ones, other roles,
other content types (code, browsing, thoughts, ...), non-text parts (images, files), messages
left with no text, messages on other branches, conversations left with no message. Nodes with
a null message (the tree's root) are structure, not content: not counted.
"""

from __future__ import annotations

import json
from typing import Any

from aichat.portability.plan import (CHATGPT, ROLES, Limits, Message, Plan, Session, Timeline,
                                     at_most, bad, from_epoch, kind, message, title)

TEXT_TYPES = ("text", "multimodal_text")


def parse(body: list[Any], limits: Limits) -> Plan:
    plan = Plan(CHATGPT)
    for i, raw in enumerate(at_most(body, limits.sessions, "conversations")):
        session = _conversation(raw, f"conversations[{i}]", limits, plan.skipped)
        if session is None:
            plan.skipped["emptyConversations"] += 1
        else:
            plan.sessions.append(session)
    return plan


def _at(where: str, key: str) -> str:
    return f"{where}.mapping[{json.dumps(key[:80], ensure_ascii=False)}]"


def _conversation(raw: Any, where: str, limits: Limits,
                  skipped: dict[str, int]) -> Session | None:
    kind(raw, dict, where, "an object")
    raw_title = kind(raw.get("title"), str, f"{where}.title", "a string", nullable=True)
    created = from_epoch(raw.get("create_time"), f"{where}.create_time")
    from_epoch(raw.get("update_time"), f"{where}.update_time")
    current = kind(raw.get("current_node"), str, f"{where}.current_node", "a string",
                   nullable=True)
    model = kind(raw.get("default_model_slug"), str, f"{where}.default_model_slug", "a string",
                 nullable=True)
    mapping = kind(raw.get("mapping"), dict, f"{where}.mapping", "an object")
    for key, node in mapping.items():
        _check_node(node, _at(where, key))
    branch = _branch(mapping, current, where)
    on_branch = set(branch)
    skipped["otherBranches"] += sum(1 for key, node in mapping.items()
                                    if key not in on_branch and node.get("message") is not None)
    timeline = Timeline(created)
    messages = []
    for key in branch:
        kept = _message(mapping[key].get("message"), f"{_at(where, key)}.message", timeline,
                        limits, skipped)
        if kept is not None:
            messages.append(kept)
    if len(messages) > limits.messages:
        raise bad(where, f"may hold at most {limits.messages} messages on its current branch")
    if not messages:
        return None
    return Session(title(raw_title), created or messages[0].created_at, model, messages)


def _check_node(node: Any, where: str) -> None:
    kind(node, dict, where, "an object")
    kind(node.get("parent"), str, f"{where}.parent", "a string", nullable=True)
    children = kind(node.get("children"), list, f"{where}.children", "a list", nullable=True)
    for j, child in enumerate(children or ()):
        kind(child, str, f"{where}.children[{j}]", "a string")
    msg = kind(node.get("message"), dict, f"{where}.message", "an object", nullable=True)
    if msg is None:
        return
    where = f"{where}.message"
    author = kind(msg.get("author"), dict, f"{where}.author", "an object")
    kind(author.get("role"), str, f"{where}.author.role", "a string")
    content = kind(msg.get("content"), dict, f"{where}.content", "an object")
    content_type = kind(content.get("content_type"), str, f"{where}.content.content_type",
                        "a string")
    parts = kind(content.get("parts"), list, f"{where}.content.parts", "a list", nullable=True)
    if parts is None and content_type in TEXT_TYPES:
        raise bad(f"{where}.content.parts", f"must be a list in {content_type} content")
    from_epoch(msg.get("create_time"), f"{where}.create_time")
    kind(msg.get("metadata"), dict, f"{where}.metadata", "an object", nullable=True)
    kind(msg.get("recipient"), str, f"{where}.recipient", "a string", nullable=True)


def _branch(mapping: dict[str, Any], current: str | None, where: str) -> list[str]:
    """The keys from the root down to `current` (or the newest leaf)."""
    key = current if current is not None else _newest_leaf(mapping)
    if key is not None and key not in mapping:
        raise bad(f"{where}.current_node", "must name a node of mapping")
    path: list[str] = []
    seen: set[str] = set()
    while key is not None:
        if key in seen:
            raise bad(f"{where}.mapping", "must be a tree: its parents form a cycle")
        seen.add(key)
        path.append(key)
        parent = mapping[key].get("parent")
        if parent is not None and parent not in mapping:
            raise bad(f"{_at(where, key)}.parent", "must name a node of mapping")
        key = parent
    path.reverse()
    return path


def _newest_leaf(mapping: dict[str, Any]) -> str | None:
    """The childless node whose message is newest (a tie: the later in the file)."""
    best: tuple[float, int] | None = None
    chosen = None
    for index, (key, node) in enumerate(mapping.items()):
        if node.get("children"):
            continue
        msg = node.get("message") or {}
        moment = msg.get("create_time")
        rank = (float(moment) if moment is not None else float("-inf"), index)
        if best is None or rank > best:
            best, chosen = rank, key
    return chosen


def _message(msg: dict[str, Any] | None, where: str, timeline: Timeline, limits: Limits,
             skipped: dict[str, int]) -> Message | None:
    """The message to keep, or None (counted in `skipped` unless it is a null message)."""
    if msg is None:
        return None
    role = msg["author"]["role"]
    recipient = msg.get("recipient")
    metadata = msg.get("metadata") or {}
    content = msg["content"]
    reason = None
    if role == "system":
        reason = "systemMessages"
    elif role == "tool" or (role == "assistant" and recipient not in (None, "all")):
        reason = "toolMessages"
    elif role not in ROLES:
        reason = "otherRoles"
    elif metadata.get("is_visually_hidden_from_conversation") is True:
        reason = "hiddenMessages"
    elif content["content_type"] not in TEXT_TYPES:
        reason = "nonTextMessages"
    if reason is not None:
        skipped[reason] += 1
        return None
    parts = content["parts"]
    texts = [part for part in parts if isinstance(part, str)]
    skipped["nonTextParts"] += len(parts) - len(texts)
    text = "\n\n".join(part for part in texts if part.strip())
    if not text.strip():
        skipped["emptyMessages"] += 1
        return None
    created = timeline.next(from_epoch(msg.get("create_time"), f"{where}.create_time"))
    return message(role, text, None, "complete", created, limits, where)
