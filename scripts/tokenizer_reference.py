"""Reference token ids for the tokenizer parity test (tests/data/tokenizer_reference.json).

Hugging Face transformers builds each tokenizer from the same GGUF file that affectbench
reads; the Rust tokenizer must reproduce these ids exactly. Re-run after changing the
corpus or adding a model:

    python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install transformers gguf torch
    cargo run --release -- models fetch smollm2-135m-instruct   # and the others
    /tmp/refenv/bin/python scripts/tokenizer_reference.py > tests/data/tokenizer_reference.json

Model files are found with `affectbench models path NAME`.
"""
import json
import os
import subprocess
import sys

import transformers
from transformers import AutoTokenizer

MODELS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "gemma3-270m"]

CORPUS = [
    "Hello, world!",
    "You feel your heart racing as the lights go out.",
    " leading space",
    "   three leading spaces and trailing   ",
    "Numbers: 0 7 42 1234 3.14159 -17 1,000,000 2026-11-21",
    "Phone 555-0199, room 12B, version v2.10.3",
    "Line one\nLine two\n\nLine four after a blank line\r\nWindows line",
    "Tabs\tbetween\twords and a trailing tab\t",
    "Punctuation!!! ??? ... --- ((nested)) [brackets] {braces} <angle> 'single' \"double\"",
    "Contractions: I'm, you're, she's, we've, they'll, it'd, don't, CAN'T",
    "Emoji: 😀 😢 😡 🤢 😨 ❤️ 👍🏽 🧘‍♀️",
    "Deutsch: Über die Brücke gehen, Straße, Äpfel und Öl.",
    "Français : « Où est la bibliothèque ? » dit-elle, déçue.",
    "Español: ¿Cómo estás? ¡Muy bien! Año, niño.",
    "Русский: Я чувствую тревогу перед экзаменом.",
    "中文：我今天感到有点焦虑，但是呼吸练习帮助了我。",
    "日本語：深呼吸をして、肩の力を抜いてください。",
    "한국어: 오늘 기분이 어때요?",
    "العربية: أشعر بالحزن اليوم.",
    "Ελληνικά: Καλημέρα κόσμε.",
    "हिन्दी: मुझे डर लग रहा है।",
    "Code: fn main() { println!(\"{}\", x + 1); } // comment",
    "def f(x):\n    return x ** 2  # square\n",
    "URL https://example.org/path?query=1&b=2#frag and email a.b@example.com",
    "MixedCASE camelCase snake_case kebab-case SCREAMING_CASE",
    "Rate how anxious you feel right now from 0 (not at all) to 100 (extremely).",
    "Answer with a single number: 1, 2, 3 or 4.",
    "Multiple     internal     spaces",
    "Accents combining: e\u0301 vs \u00e9, n\u0303",
    "Zero-width\u200bjoiner and non\u00a0breaking space",
    "Math: ∑ x² ≤ ∞, α β γ, 1/2 ½ ¾",
    "$100 €50 £20 ¥1000 50% #hashtag @mention &amp;",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "a",
    " ",
    "\n",
    "",
]


def model_path(name):
    out = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "--", "models", "path", name],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


def main():
    result = {"generator": "scripts/tokenizer_reference.py",
              "transformers_version": transformers.__version__, "models": {}}
    for name in MODELS:
        path = model_path(name)
        tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
        cases = []
        for text in CORPUS:
            cases.append({
                "text": text,
                "ids": tok(text, add_special_tokens=False).input_ids,
                "ids_with_special": tok(text, add_special_tokens=True).input_ids,
            })
        result["models"][name] = cases
        print(f"{name}: {len(cases)} texts", file=sys.stderr)
    json.dump(result, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
