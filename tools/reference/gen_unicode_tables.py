#!/usr/bin/env python3
# gen_unicode_tables.py: writes src/models/tokenizer_unicode_tables.h, the Unicode data the C CLIP tokenizer needs.
# Everything is what the `tokenizers` library (which transformers' CLIPTokenizer runs) does: letter/number/space
# classes from its Oniguruma \p{L}, \p{N}, \s, lowercasing from Rust's char::to_lowercase, combining classes,
# decompositions and compositions from its NFC/NFD (candidates from Python's unicodedata, kept where tokenizers
# agrees).
#
# usage: tools/reference/.venv/bin/python tools/reference/gen_unicode_tables.py
import os
import unicodedata

from tokenizers import Regex, normalizers, pre_tokenizers

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "models",
                   "tokenizer_unicode_tables.h")
CODEPOINTS = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def regex_members(pattern):
    split = pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True)
    return [c for c in CODEPOINTS if split.pre_tokenize_str(chr(c))]


def to_ranges(members):
    out = []
    for c in members:
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def lower_tables():
    lower = normalizers.Lowercase()
    single, special = [], []
    for c in CODEPOINTS:
        s = lower.normalize_str(chr(c))
        if s == chr(c):
            continue
        if len(s) == 1:
            single.append((c, ord(s)))
        else:
            special.append([c] + [ord(x) for x in s])
    runs = []  # [start, count, stride, delta]: start + k*stride maps to itself + delta for k < count
    for c, lc in single:
        d = lc - c
        if runs:
            s, n, st, dd = runs[-1]
            last = s + (n - 1) * st
            if dd == d and ((n == 1 and c - last in (1, 2)) or (n > 1 and c - last == st)):
                runs[-1] = [s, n + 1, c - last, d]
                continue
        runs.append([c, 1, 1, d])
    assert all(len(s) == 3 for s in special)
    return runs, special


def combining_classes():
    """Canonical combining classes as tokenizers' NFC applies them. Its tables predate a hundred or so newer marks,
    which it treats as class 0, so the classes are probed: how NFC orders each character against one reference
    mark per class."""
    nfc = normalizers.NFC().normalize_str
    base = "\u4e00"  # composes with nothing

    def after(c, r):  # NFC moves r, written after c, in front of it: class(c) > class(r) > 0
        return c != r and nfc(base + c + r) == base + r + c

    lowest, acute = "\u0334", "\u0301"  # classes 1 and 230
    refs = {1: lowest, 230: acute}
    marked = [(chr(c), unicodedata.combining(chr(c))) for c in CODEPOINTS if unicodedata.combining(chr(c))]
    for ch, k in marked:
        if k not in refs and nfc(ch) == ch and after(ch, lowest) and (after(acute, ch) if k < 230 else after(ch, acute)):
            refs[k] = ch
    ks = sorted(refs)
    assert all(after(refs[a], refs[b]) == (a > b) for a in ks for b in ks if a != b)

    def probe(ch):
        if not after(ch, lowest):
            return 1 if after(acute, ch) else 0
        return next(k for k in ks if k > 1 and not after(ch, refs[k]))

    return {c: k for c in CODEPOINTS if nfc(chr(c)) == chr(c) and (k := probe(chr(c)))}


def nfc_tables():
    ccc = combining_classes()
    ccc_runs = []
    for c in sorted(ccc):
        if ccc_runs and ccc_runs[-1][1] == c - 1 and ccc_runs[-1][2] == ccc[c]:
            ccc_runs[-1][1] = c
        else:
            ccc_runs.append([c, c, ccc[c]])
    # Canonical decompositions [composite, first, second (0 for a singleton)], sorted by composite: those of
    # unicodedata that tokenizers' NFD also applies. CJK compatibility ideographs are left out (documented in
    # tokenizer_unicode.h).
    nfd = normalizers.NFD().normalize_str
    decomp = []
    for c in CODEPOINTS:
        d = unicodedata.decomposition(chr(c))
        if not d or d.startswith("<") or 0xF900 <= c <= 0xFAFF or 0x2F800 <= c <= 0x2FA1F:
            continue
        if nfd(chr(c)) != unicodedata.normalize("NFD", chr(c)):
            assert nfd(chr(c)) == chr(c), hex(c)
            continue
        parts = [int(x, 16) for x in d.split()]
        decomp.append([c, parts[0], parts[1] if len(parts) == 2 else 0])
    table = {c: (a, b) for c, a, b in decomp}

    def decompose(c):
        if c not in table:
            return [c]
        a, b = table[c]
        return decompose(a) + (decompose(b) if b else [])

    for c in CODEPOINTS:
        if not (0xF900 <= c <= 0xFAFF or 0x2F800 <= c <= 0x2FA1F):
            assert "".join(map(chr, decompose(c))) == nfd(chr(c)) or 0xAC00 <= c <= 0xD7A3, hex(c)
    # Primary composites, as tokenizers' NFC composes them (it lacks U+11938 = U+11935 U+11930).
    nfc = normalizers.NFC().normalize_str
    compose = [i for i, (c, a, b) in enumerate(decomp)
               if b and unicodedata.normalize("NFC", chr(c)) == chr(c) and nfc(nfd(chr(c))) == chr(c)]
    compose.sort(key=lambda i: (decomp[i][1], decomp[i][2]))
    return ccc_runs, decomp, compose


def emit(f, decl, rows, fmt, per_line):
    f.write(f"{decl} = {{\n")
    for i in range(0, len(rows), per_line):
        f.write("    " + " ".join(fmt(r) + "," for r in rows[i:i + per_line]) + "\n")
    f.write("};\n")


def main():
    letters = to_ranges(regex_members(r"\p{L}"))
    numbers = to_ranges(regex_members(r"\p{N}"))
    spaces = regex_members(r"\s")
    lower_runs, lower_special = lower_tables()
    ccc_runs, decomp, compose = nfc_tables()
    pair = lambda r: "{0x%X, 0x%X}" % tuple(r)
    with open(OUT, "w", encoding="ascii", newline="\n") as f:
        f.write("// tokenizer_unicode_tables.h: Unicode property tables of the CLIP tokenizer, included only by\n"
                "// tokenizer_unicode.c. Generated by tools/reference/gen_unicode_tables.py from the `tokenizers` library and\n"
                f"// Python's unicodedata (Unicode {unicodedata.unidata_version}); regenerate rather than edit.\n"
                "#pragma once\n#include <stdint.h>\n\n")
        f.write("// Oniguruma \\p{L}: inclusive code point ranges, ascending.\n")
        emit(f, "static const uint32_t uni_letter_ranges[][2]", letters, pair, 6)
        f.write("\n// Oniguruma \\p{N}: inclusive code point ranges, ascending.\n")
        emit(f, "static const uint32_t uni_number_ranges[][2]", numbers, pair, 6)
        f.write("\n// Oniguruma \\s, ascending.\n")
        emit(f, "static const uint32_t uni_space_chars[]", spaces, lambda c: "0x%X" % c, 12)
        f.write("\n// One-to-one lowercase mappings as {start, count, stride, delta}: start + k*stride (k < count) maps to\n"
                "// itself + delta. Ascending by start.\n")
        emit(f, "static const int32_t uni_lower_runs[][4]", lower_runs, lambda r: "{0x%X, %d, %d, %d}" % tuple(r), 4)
        f.write("\n// Lowercase mappings to two code points: {code point, first, second}.\n")
        emit(f, "static const uint32_t uni_lower_special[][3]", lower_special,
             lambda r: "{0x%X, 0x%X, 0x%X}" % tuple(r), 4)
        f.write("\n// Non-zero canonical combining classes as {first, last, class}, ascending.\n")
        emit(f, "static const uint32_t uni_ccc_runs[][3]", ccc_runs, lambda r: "{0x%X, 0x%X, %d}" % tuple(r), 5)
        f.write("\n// Canonical decompositions {composite, first, second (0: singleton)}, ascending by composite.\n")
        emit(f, "static const uint32_t uni_decompositions[][3]", decomp, lambda r: "{0x%X, 0x%X, 0x%X}" % tuple(r), 4)
        f.write("\n// Indices into uni_decompositions of the primary composites, ascending by (first, second).\n")
        emit(f, "static const uint16_t uni_compose_index[]", compose, lambda i: "%d" % i, 14)
    print("letters", len(letters), "numbers", len(numbers), "spaces", len(spaces), "lower runs", len(lower_runs),
          "lower special", len(lower_special), "ccc runs", len(ccc_runs), "decompositions", len(decomp),
          "compositions", len(compose))


if __name__ == "__main__":
    main()
