"""Generate a realistic Open WebUI feedback export of a chosen size, for benchmarks.

Records have the real 0.12.4 nested shape (taken from fixtures/openwebui-0.12.4/export.json),
long chats whose history grows with every turn, retrieved sources on some answers, and a share
of records that convert must skip (rating 0, null, other types) or reject (schema errors).

    python benchmarks/generate_export.py --size-mb 500 -o benchmarks/out/export-500mb.json
    python benchmarks/generate_export.py --shape short-strings --size-mb 200 -o FILE

--shape short-strings: records of about 70 kB, each a chat of 24 messages made of many short
strings (status lines, tags, follow-ups, short answers) full of escapes (newlines, quotes,
backslashes), CJK and emoji: the shape where per-record Python work weighs most next to the
parser.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "fixtures" / "openwebui-0.12.4" / "export.json"
WORDS = (
    "the model answered with a long explanation of joins indexes latency retrieval refunds "
    "policy section vector database résumé 日本語 données مرحبا 👍 query plan cache token budget "
    "because however therefore example customer ticket escalation summary"
).split()


class TextPool:
    """Slices of one large random text: cheap to take, varied enough for a parser."""

    def __init__(self, rng: random.Random, size: int = 2_000_000) -> None:
        words = [rng.choice(WORDS) for _ in range(size // 6)]
        self.text = " ".join(words)
        self.rng = rng

    def take(self, low: int, high: int) -> str:
        n = self.rng.randint(low, high)
        start = self.rng.randrange(0, len(self.text) - n)
        return self.text[start : start + n]


def thread(
    rng: random.Random, turns: int, fields: Callable[[int, str], dict[str, Any]]
) -> tuple[dict[str, Any], str, int]:
    """`turns` user/assistant pairs chained by parentId/childrenIds, each message's own fields
    from FIELDS(turn, role); returns (messages by id, a rated assistant message's id, index)."""
    messages: dict[str, Any] = {}
    parent = None
    ids: list[str] = []
    for turn in range(turns):
        for role in ("user", "assistant"):
            mid = str(uuid.UUID(int=rng.getrandbits(128)))
            message = {"id": mid, "parentId": parent, "childrenIds": [], "role": role}
            message.update(fields(turn, role))
            if parent is not None:
                messages[parent]["childrenIds"].append(mid)
            messages[mid] = message
            ids.append(mid)
            parent = mid
    rated = rng.randrange(1, len(ids), 2)  # an assistant message
    return messages, ids[rated], rated + 1


def make_chat(rng: random.Random, pool: TextPool, turns: int) -> tuple[dict[str, Any], str, int]:
    """Long messages; a third of the answers carry retrieved sources."""

    def fields(turn: int, role: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "content": pool.take(80, 600) if role == "user" else pool.take(400, 4000),
            "timestamp": 1795400000 + turn * 60,
        }
        if role == "assistant":
            message.update(
                model="my-model-config",
                modelName="My Model",
                modelIdx=0,
                done=True,
                usage={"prompt_tokens": rng.randint(10, 9000), "completion_tokens": 300},
            )
            if rng.random() < 0.3:
                message["sources"] = [
                    {
                        "source": {"name": f"doc-{i}.pdf", "type": "file"},
                        "document": [pool.take(1000, 6000)],
                        "metadata": [{"page": i, "source": f"doc-{i}.pdf"}],
                    }
                    for i in range(rng.randint(1, 4))
                ]
        return message

    return thread(rng, turns, fields)


SHORT = [
    "OK", "Done.", 'He said "no"', "line one\nline two", "C:\\temp\\x", "tab\there",
    "日本語のテキスト", "données", "👍 great", "🚀🔥", "مرحبا", "a \"quoted\" word", "100%",
    "步骤一：\n步骤二", "emoji 😀 and 漢字",
]  # fmt: skip


def short_text(rng: random.Random, pool: TextPool) -> str:
    return rng.choice(SHORT) + " " + pool.take(5, 40)


def make_short_chat(rng: random.Random, pool: TextPool) -> tuple[dict[str, Any], str, int]:
    """24 messages of many short strings each."""

    def fields(turn: int, role: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "content": "\n".join(short_text(rng, pool) for _ in range(rng.randint(3, 12))),
            "timestamp": 1795400000 + turn * 60,
            "statusHistory": [
                {
                    "action": "web_search",
                    "description": short_text(rng, pool),
                    "done": True,
                    "urls": [f"https://example.com/{rng.randint(0, 999)}"],
                }
                for _ in range(rng.randint(4, 10))
            ],
            "followUps": [short_text(rng, pool) for _ in range(rng.randint(3, 8))],
            "annotation": {"tags": [rng.choice(SHORT) for _ in range(6)], "rating": None},
        }
        if role == "assistant":
            message.update(model="my-model-config", modelName="My Model", done=True)
        return message

    return thread(rng, 12, fields)


def make_record(
    rng: random.Random, pool: TextPool, template: dict[str, Any], shape: str = "long-chats"
) -> dict[str, Any]:
    record = copy.deepcopy(template)
    record["id"] = str(uuid.UUID(int=rng.getrandbits(128)))
    chat_id = str(uuid.UUID(int=rng.getrandbits(128)))
    if shape == "short-strings":
        messages, rated_id, index = make_short_chat(rng, pool)
    else:
        turns = min(int(rng.paretovariate(1.1)) + 2, 60)
        messages, rated_id, index = make_chat(rng, pool, turns)
    record["meta"].update(chat_id=chat_id, message_id=rated_id, message_index=index)
    roll = rng.random()
    rating: Any = rng.choice([1, -1, 1, "1", "-1"])
    if roll < 0.02:
        rating = rng.choice([0, None, 7])
    record["data"]["rating"] = rating
    record["data"]["comment"] = pool.take(0, 200) if rng.random() < 0.3 else None
    record["updated_at"] = 1795400000 + rng.randint(0, 3_000_000)
    if 0.02 <= roll < 0.03:
        record["updated_at"] = "not a timestamp"  # schema reject
    chat = record["snapshot"]["chat"]
    chat["id"] = chat_id
    chat["chat"]["history"] = {"messages": messages, "currentId": rated_id}
    chat["chat"]["messages"] = list(messages.values())[-8:]
    return record


def generate(path: Path, size_mb: float, seed: int = 7, shape: str = "long-chats") -> int:
    """Write an export of about size_mb megabytes to path; returns the record count."""
    rng = random.Random(seed)
    pool = TextPool(rng)
    templates = [r for r in json.loads(TEMPLATE.read_text("utf-8")) if r.get("snapshot")]
    target = int(size_mb * 1_000_000)
    written = 0
    count = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        out.write("[\n")
        while written < target:
            record = make_record(rng, pool, rng.choice(templates), shape)
            text = json.dumps(record, ensure_ascii=False)
            if count:
                out.write(",\n")
            out.write(text)
            written += len(text.encode("utf-8")) + 2
            count += 1
        out.write("\n]\n")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=50)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--shape", choices=("long-chats", "short-strings"), default="long-chats")
    args = parser.parse_args()
    count = generate(args.output, args.size_mb, args.seed, args.shape)
    print(f"{args.output}: {count} records, {args.output.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
