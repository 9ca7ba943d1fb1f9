#!/usr/bin/env python3
# gen_tokenizer_fixture.py: writes tests/fixtures/tokenizer_cases.json, the expected CLIP token ids of a few hundred
# prompts for tests/parity_tokenizer.c, computed by transformers' CLIPTokenizer from data/tokenizer/clip (pad
# 49407: SD 1.5 and SDXL `tokenizer`) and from the same vocabulary with data/tokenizer/clip_pad0's configs (pad "!"
# = 0, an added special token: SDXL `tokenizer_2`). transformers 5's CLIPTokenizer runs the `tokenizers` pipeline and
# never calls ftfy; ftfy is used here only to flag the cases where transformers 4.x's Python CLIPTokenizer (ftfy path)
# would have fed different text to BPE.
#
# usage: tools/reference/.venv/bin/python tools/reference/gen_tokenizer_fixture.py
import json
import os
import random
import shutil
import tempfile

import ftfy
import regex
from transformers import CLIPTokenizer

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MAX_LEN = 77

# Inputs the C tokenizer is known not to reproduce, with the reason (kept in the fixture, reported, not failed).
KNOWN_MISMATCH = {
    "\uf900\uf901 \ufa0e \U0002f800": "CJK compatibility ideographs are not NFC-mapped to their unified ideographs",
}

ASCII_PROMPTS = [
    "a photo of a cat", "A cat with two horns on its head", "an astronaut riding a horse, 4k!!",
    "a beautiful landscape painting of mountains at sunset, trending on artstation",
    "portrait of a young woman, highly detailed, digital art, sharp focus, octane render",
    "a red apple on a wooden table", "cyberpunk city street at night, neon lights, rain, reflections",
    "a dog wearing sunglasses sitting on a beach chair", "photorealistic close-up of a bee on a sunflower",
    "an oil painting of a ship in a storm by j. m. w. turner", "minimalist logo of a fox, vector art",
    "studio ghibli style forest with a small cottage", "a bowl of ramen, food photography, 35mm, f/1.8",
    "isometric view of a tiny island with a lighthouse", "a knight in shining armor fighting a dragon",
    "watercolor illustration of a hummingbird", "the eiffel tower made of lego bricks",
    "a steampunk robot reading a newspaper in a cafe", "macro shot of dew drops on a spider web",
    "a futuristic sports car, unreal engine 5, ray tracing", "an elephant standing on a tiny stool",
    "low poly render of a whale jumping out of the ocean", "a cozy reading nook with warm lighting",
    "abstract geometric shapes in pastel colors", "a medieval castle on a hill under a starry sky",
    "a portrait of albert einstein in the style of van gogh", "two cats playing chess",
    "masterpiece, best quality, ultra-detailed, 8k wallpaper", "blurry, low quality, jpeg artifacts, watermark",
    "a teddy bear on a skateboard in times square", "an astronaut lounging in a tropical resort in space",
    "a corgi's head depicted as an explosion of a nebula", "a small cactus wearing a straw hat and neon sunglasses",
    "a pikachu fine dining with a view to the eiffel tower", "kids playing in the snow, norman rockwell style",
    "concept art of a floating city, matte painting", "a bowl of fruit, still life, chiaroscuro",
    "a raccoon astronaut with the cosmos reflecting on the glass of his helmet", "pixel art of a haunted house",
    "an anime girl with blue hair and a school uniform",
]

PUNCTUATION = [
    "!!!", "...", "?!", "!?", "(masterpiece:1.2), (best quality:1.4)", "[[[very detailed]]]", "{red|green|blue}",
    "--ar 16:9 --v 5", "a,b;c:d", "@#$%^&*", "a--b", "~~~", ":-) ;-) :D", "<>", "<<<>>>", "\"quoted\" text",
    "'single quoted'", "a/b\\c", "___init___", "end.", "...and then?", "hello...world", "x = y + z * 2",
    "(((((a)))))", "#hashtag #sd #art", "e-mail@example.com", "https://example.com/path?x=1&y=2",
    "a_b-c.d", "||", "<|", "|>", "*-*-*-*", "=^.^=", "¿que?", "«guillemets»", "—em dash— – en dash",
    "…ellipsis", "•bullet", "†‡§¶", "a|b|c",
]

NUMBERS = [
    "4k", "8k uhd", "1920x1080", "3.14159", "1,000,000", "v1.5", "2024-01-01", "007", "0", "99 bottles",
    "12345678901234567890", "1st 2nd 3rd 4th", "½ ¼ ¾", "x² + y³", "① ② ③", "Ⅷ Ⅻ ⅷ", "٣٤٥ arabic-indic",
    "४२ devanagari", "１２３ fullwidth", "1e-5", "-42", "+7", "$100", "50%", "10:30pm", "mp3 mp4 h264",
    "R2-D2 and C-3PO", "route 66", "𝟙𝟚𝟛 math digits",
]

APOSTROPHES = [
    "it's", "don't", "they're", "we've", "i'm", "you'll", "he'd", "IT'S", "DON'T", "They'Re", "rock'n'roll",
    "'s", "''s", "o'clock", "it’s curly", "dogs' bones", "'tis the season", "'re 've 'm 'll 'd 't",
    "can't won't shouldn't", "the cat's pajamas", "y'all'd've", "'", "''", "'''", "l'amour d'une vie",
    "'S'T'RE'VE'M'LL'D",
]

MIXED_CASE = [
    "HeLLo WoRLD", "NASA", "iPhone", "McDonald's", "CamelCaseWord", "ALL CAPS PROMPT OF A DOG", "a PHOTO of A cat",
    "SpongeBob SquarePants", "DSLR", "HDR, UHD, 4K",
]

ACCENTED = [
    "café", "naïve", "Ærøskøbing", "São Paulo", "Zürich", "Łódź", "Ångström", "straße", "STRASSE ẞ", "Ĳssel",
    "Tiếng Việt có dấu", "İstanbul", "ǅemal ǈubljana ǋ", "Crème brûlée", "façade", "jalapeño", "smörgåsbord",
    "Dvořák", "Ştefan Ţară", "Ørsted", "ÀÁÂÃÄÅ àáâãäå", "ÇÈÉÊË", "Œuvre œuvre", "Ñandú", "Þór", "ðe",
    "e\u0301 decomposed", "A\u030a decomposed angstrom", "Tie\u0302\u0301ng", "a\u0302\u0323 reorder",
    "n\u0303o", "x\u0301 no composite", "\u0301 leading mark", "u\u0308\u0304", "K\u212a kelvin sign",
    "\u212b angstrom sign", "\u2126 ohm sign",
]

GREEK = [
    "Καλημέρα κόσμε", "ΟΔΟΣ", "αβγδε", "ἀγαθός", "ΣΊΣΥΦΟΣ", "Σ", "σς", "ΆΈΉΊΌΎΏ", "α\u0301 decomposed",
    "ᾅ ᾯ ῷ", "Ελληνικά 2024", "φιλοσοφία", "ΑΒΓ abc ΑΒΓ",
]

CYRILLIC = [
    "Привет мир", "МОСКВА", "ёлка Ёлка", "Їжак", "Ђорђе", "и\u0306 decomposed", "Съешь же ещё этих мягких булок",
    "Україна", "Беларусь", "Қазақстан", "Ѣ ѣ Ѳ", "кот в сапогах, 4к",
]

CJK = [
    "一只猫", "東京タワー", "こんにちは世界", "한국어 텍스트", "漢字かなカナ", "ｶﾀｶﾅ", "ＡＢＣ ａｂｃ", "「こんにちは」。、",
    "\uf900\uf901 \ufa0e \U0002f800", "\u1100\u1161\u11a8 jamo", "가\u11a8", "吾輩は猫である。名前はまだ無い。",
    "中文提示词：一只可爱的小狗", "か\u3099 decomposed dakuten", "𠀀𠀁 extension b",
]

EMOJI = [
    "🐱", "a cat 🐈\u200d⬛", "👍🏽", "🇯🇵", "❤️", "👨\u200d👩\u200d👧", "😀😀😀", "1️⃣", "🔥 fire 🔥", "☀️🌙⭐",
    "🎨 art", "emoji at the end 🚀",
]

HTML = [
    "&amp;", "&lt;3", "Tom &amp; Jerry", "&quot;hi&quot;", "&#39;quoted&#39;", "&nbsp;", "<b>bold</b>",
    "&lt;b&gt;escaped&lt;/b&gt;", "&eacute;t&eacute;", "&#x1F600;",
]

WHITESPACE = [
    "a\tb", "a\nb", "a  b", "   leading", "trailing   ", "\n\tmixed \r\n whitespace\t", "a\u00a0b", "a\u3000b",
    "a\u200bb", "a\u2028b", "a\x0b\x0cb", "a\x85b", "a\u1680b", "a\u180eb", "\ufeffbom", "a\u2009thin\u202fnarrow",
    "a\x1cb\x1fc", " ", "\t\n ", "word\n\n\nword",
]

SPECIALS = [
    "<|startoftext|>", "<|endoftext|>", "a <|endoftext|> b", "<|ENDOFTEXT|>", "<|StartOfText|>",
    "<|endoftext|><|endoftext|>", "<|endoftext", "<|startoftext|>a photo", "<||>", "< |endoftext| >",
    "x<<|endoftext|>>", "prompt<|startoftext|>", "<|endoftext|>!", "<|startoftext|> <|endoftext|> mid",
]

BANG = [
    "!", "!!", "! !! !!!", "wow!", "hello!world", "！", "¡hola!", "a!b!c", "!a", "!!1!!", "!?!?", "(!)", "!'s",
]

CONTROL = [
    "\x01", "a\x7fb", "\x1b[31mred\x1b[0m", "a\u200db", "soft\u00adhyphen", "\ufffd", "\ue000 private use",
    "tab\x08backspace", "\u202eright-to-left override", "ligature ﬁne ﬂow", "™©®", "°C µm", "ℌℑℜ",
    "∑∫√∞ ≠ ≤", "€£¥₹", "←↑→↓", "\u0628\u064b\u1df7 mark order", "a\u1ac1\u0316 newer marks",
]

OTHER_SCRIPTS = [
    "مرحبا بالعالم", "مُحَمَّد", "שלום עולם", "שָׁלוֹם", "नमस्ते दुनिया", "क़ नुक़्ता", "สวัสดีครับ", "Բարեւ Ձեզ",
    "გამარჯობა", "தமிழ்", "ᏣᎳᎩ ꮳꮃꭹ", "𐐀𐐨 deseret", "ᲒᲐᲛᲐᲠᲯᲝᲑᲐ", "Ꙁꙁ", "ⰀⰰⰁ", "𞤀𞤢 adlam",
]

INVALID_UTF8 = [
    b"\xff", b"abc\xc3", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"caf\xe9 latin-1",
    b"\x80\x80 stray", b"\xf0\x9f\x98 truncated emoji", b"ok\xe2\x82\xacok", b"\xe0\x80\xaf overlong",
    b"\xf8\x88\x80\x80\x80 five-byte", b"a\xc3\x28b", b"\xe1\x80\xe2\xf0\x91\x92\xf1\xbf\x41",
]

LONG = [
    "a " * 100,
    "a very long prompt " * 20,
    "masterpiece, best quality, " * 12 + "a cat",
    "a" * 300,
    "!" * 100,
    "1" * 100,
    " ".join(str(i) for i in range(40)),
    " ".join(["word"] * 74),
    " ".join(["word"] * 75),
    " ".join(["word"] * 76),
    " ".join(["word"] * 73) + " !!",
    "photo " * 74 + "<|endoftext|>",
    "a cat " * 37 + "<|endoftext|> tail",
    "supercalifragilisticexpialidocious " * 10,
    "Привет " * 40,
    "猫" * 120,
    "😀" * 60,
    "a beautiful detailed painting of a lighthouse on a rocky coast at dawn, waves crashing, seagulls, "
    "dramatic clouds, golden hour lighting, by ivan aivazovsky and thomas kinkade and greg rutkowski, "
    "oil on canvas, highly detailed, intricate, 8k, trending on artstation, award winning",
]

# Consecutive code points of blocks whose letter/number classes, case mappings and NFC behaviour matter.
SWEEP_BLOCKS = [
    (0x21, 0x7E), (0xA0, 0xFF), (0x100, 0x17F), (0x180, 0x24F), (0x250, 0x2FF), (0x370, 0x3FF), (0x400, 0x4FF),
    (0x500, 0x52F), (0x531, 0x58F), (0x10A0, 0x10FF), (0x13A0, 0x13F5), (0x1C90, 0x1CBF), (0x1E00, 0x1EFF),
    (0x1F00, 0x1FFF), (0x2000, 0x206F), (0x2100, 0x218B), (0x2460, 0x24FF), (0x2C00, 0x2C7F), (0x2C80, 0x2CFF),
    (0x3000, 0x303F), (0xA640, 0xA69F), (0xA720, 0xA7FF), (0xAB70, 0xABBF), (0xFF00, 0xFF65), (0x10400, 0x1044F),
    (0x1E900, 0x1E95F),
]


def sweep_cases():
    out = []
    for lo, hi in SWEEP_BLOCKS:
        cps = [c for c in range(lo, hi + 1) if not 0xD800 <= c <= 0xDFFF]
        for i in range(0, len(cps), 16):
            out.append(" ".join(chr(c) for c in cps[i:i + 16]))
    return out


def random_cases(n):
    rng = random.Random(20240601)
    pool = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") + list(" \t\n  ") +
            list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + list("éèüößñçÅØłŁİıΣσςΩωЖжЁё中文日本語한글٣½²") +
            ["\u0301", "\u0308", "\u0323", "\u00a0", "\u3000", "'s", "'t", "'ll", "<|endoftext|>", "😀", "🐈",
             "\u200d", "\ufe0f", "!!", "\ufffd"])
    out = []
    for _ in range(n):
        out.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 40))))
    return out


def build_cases():
    groups = [
        ("ascii_prompt", ASCII_PROMPTS), ("punctuation", PUNCTUATION), ("numbers", NUMBERS),
        ("apostrophes", APOSTROPHES), ("mixed_case", MIXED_CASE), ("accented_latin", ACCENTED), ("greek", GREEK),
        ("cyrillic", CYRILLIC), ("cjk", CJK), ("emoji", EMOJI), ("html_entities", HTML), ("whitespace", WHITESPACE),
        ("empty", ["", "   "]), ("special_tokens", SPECIALS), ("bang", BANG), ("control_symbols", CONTROL),
        ("other_scripts", OTHER_SCRIPTS), ("long", LONG), ("sweep", sweep_cases()), ("random", random_cases(40)),
    ]
    cases = [(cat, s.encode("utf-8")) for cat, items in groups for s in items]
    cases += [("invalid_utf8", b) for b in INVALID_UTF8]
    return cases


def main():
    clip_dir = os.path.join(ROOT, "data", "tokenizer", "clip")
    tok = CLIPTokenizer.from_pretrained(clip_dir)
    with tempfile.TemporaryDirectory() as pad0_dir:  # SDXL tokenizer_2 layout: same vocabulary, its own configs
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(clip_dir, name), pad0_dir)
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(os.path.join(ROOT, "data", "tokenizer", "clip_pad0", name), pad0_dir)
        tok2 = CLIPTokenizer.from_pretrained(pad0_dir)
    assert tok.pad_token_id == 49407 and tok2.pad_token_id == 0
    normalizer = tok.backend_tokenizer.normalizer

    def encode(t, text):  # the ids before the padding, checked against the padded call the pipelines make
        padded = t(text, padding="max_length", max_length=MAX_LEN, truncation=True)["input_ids"]
        ids = t(text, max_length=MAX_LEN, truncation=True)["input_ids"]
        assert ids[0] == 49406 and ids[-1] == 49407 and padded == ids + [t.pad_token_id] * (MAX_LEN - len(ids))
        return ids

    out = []
    for cat, raw in build_cases():
        assert b"\x00" not in raw
        text = raw.decode("utf-8", errors="replace")
        # what transformers 4.x's Python CLIPTokenizer fed to BPE when ftfy was installed, against what runs now
        old = regex.sub(r"\s+", " ", ftfy.fix_text(text)).strip().lower()
        new = normalizer.normalize_str(text).strip(" ")
        case = {"category": cat, "text": text}
        if text.encode("utf-8") != raw:
            case["utf8_hex"] = raw.hex()
        case.update({"ids": encode(tok, text), "ids_pad0": encode(tok2, text), "ftfy_changes_text": old != new})
        if text in KNOWN_MISMATCH:
            case["known_mismatch"] = KNOWN_MISMATCH[text]
        out.append(case)

    doc = {
        "source": "transformers CLIPTokenizer over data/tokenizer/clip (ids) and data/tokenizer/clip_pad0 (ids_pad0); "
                  "padding='max_length', max_length=77, truncation=True. Lists stop at the eos (49407); the rest of "
                  "the 77 ids is the pad id (49407, resp. 0). The input is text, or utf8_hex where it is not valid "
                  "UTF-8 (text is then its decoding with errors='replace'). ftfy_changes_text: transformers 4.x with ftfy would have normalised the text "
                  "differently.",
        "max_length": MAX_LEN,
        "cases": out,
    }
    path = os.path.join(ROOT, "tests", "fixtures", "tokenizer_cases.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n")
        f.write(f'"source": {json.dumps(doc["source"])},\n"max_length": {MAX_LEN},\n"cases": [\n')
        f.write(",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in out))
        f.write("\n]}\n")
    print(f"{len(out)} cases, {sum(c['ftfy_changes_text'] for c in out)} where ftfy would change the text, "
          f"{sum('known_mismatch' in c for c in out)} marked -> {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
