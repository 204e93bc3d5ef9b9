"""Strings for tokenizer parity tests: code, whitespace, numbers, scripts, emoji, fake specials.

Owns: CORPUS, a deterministic list of >= 200 varied strings (hand-written plus small generated
families). Must not: depend on any tokenizer; tests decide what to compare.
"""

from __future__ import annotations

_PROSE = [
    "Hello world",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "I'm sure you've heard: they'll say it's fine, but we'd rather not.",
    "HOW'S IT GOING? I'M FINE. YOU'RE LATE. WE'VE WON. SHE'LL COME. HE'D GO.",
    "Hello've world23 HOW's HOW'S how's are yous?",
    "don't can't won't shouldn't y'all 'tis o'clock rock'n'roll",
    "Once upon a time, in a land far, far away, there lived a tokenizer.",
    "A sentence with trailing spaces   ",
    "   A sentence with leading spaces",
    "Mr. Smith paid $3.50 for 2 apples (i.e. $1.75 each) -- a bargain!",
    "e.g., etc., vs. U.S.A. Ph.D. a.m. p.m.",
    "hyphen-ated well-known state-of-the-art re-enter",
    "Quotes: \"double\" 'single' \u201ccurly\u201d \u2018curly\u2019 \u00abguillemets\u00bb \u201elow\u201c",
    "Dashes \u2013 en \u2014 em \u2015 bar \u2212 minus",
    "Ellipsis\u2026 and three dots...",
    "ALLCAPSWORDWITHOUTSPACES",
    "camelCaseIdentifierName and snake_case_identifier_name and kebab-case-name",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "Donaudampfschifffahrtsgesellschaftskapit\u00e4nsm\u00fctzenabzeichen",
    "https://example.com/path/to/page?query=1&other=two#fragment",
    "user.name+tag@example.co.uk",
    "C:\\Users\\Admin\\Documents\\file.txt",
    "/usr/local/lib/python3.11/site-packages/numpy/__init__.py",
    "#hashtag @mention $TICKER %percent ^caret &amp *star",
    "!!!!!!!!!! ?????????? .......... ,,,,,,,,,, ;;;;;;;;;;",
    "----------------------------------------",
    "========================================",
    "****************************************",
    "________________________________________",
    "~~~~~~~~~~ `````````` '''''''''' \"\"\"\"\"\"\"\"\"\"",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "A",
    "a",
    ".",
    " ",
    "  ",
    "\n",
    "\t",
    "x" * 300,
    "ab" * 150,
    "the " * 60,
    "lorem ipsum dolor sit amet " * 8,
]

_CODE = [
    "def add(a, b):\n    return a + b\n",
    "class Foo(Bar):\n    \"\"\"Docstring.\"\"\"\n\n    def __init__(self, x: int = 0) -> None:\n        self.x = x\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "#include <stdio.h>\n\nint main(void) {\n    printf(\"%d\\n\", 42);\n    return 0;\n}\n",
    "const f = async (x) => { await fetch(`/api/${x}`); return x ?? null; };",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
    "{\"key\": \"value\", \"list\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "<html>\n  <body>\n    <div class=\"main\"><p>Hi &amp; bye</p></div>\n  </body>\n</html>",
    "if [ -f ~/.bashrc ]; then\n  source ~/.bashrc && echo \"ok\" | grep -v '^#' > /dev/null 2>&1\nfi",
    "all: build\n\nbuild:\n\tgcc -O2 -Wall -o app main.c\n\nclean:\n\trm -f app\n",
    "key:\n  - item1\n  - item2\n  nested:\n    deeper: 'value'\n",
    "fn main() -> Result<(), Box<dyn Error>> {\n    let v: Vec<u8> = vec![0; 16];\n    Ok(())\n}",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # squares of evens",
    "lambda x, *args, **kwargs: (x, args, kwargs)",
    "a += 1; b -= 2; c *= 3; d /= 4; e %= 5; f <<= 6; g >>= 7; h &= 8; i |= 9; j ^= 10",
    "if (a != b && c <= d || e >= f) { return !g; }",
    "regex = r'^(?P<name>[A-Za-z_]\\w*)\\s*=\\s*(\\d+(?:\\.\\d+)?)$'",
    "\\documentclass{article}\n\\begin{equation}\n  E = mc^2 \\quad \\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}\n\\end{equation}",
    "| Name | Age |\n|------|-----|\n| Bob  | 42  |\n| Ann  | 7   |",
    "```python\nprint('hello')\n```",
    "    indented with four spaces\n        and eight\n            and twelve",
    "\tone tab\n\t\ttwo tabs\n\t\t\tthree tabs\n",
    "mixed \t tabs\t \tand  spaces \t\t  here",
    "0x1F 0xdeadbeef 0b1010 0o777 1e-10 6.02e23 -3.14 +2.71",
    "func(arg1,arg2,arg3)[0].attr->ptr::ns<T>",
    "// comment\n/* block\n   comment */\n# shell comment\n-- sql comment",
    "<?php echo $var; ?>",
    "git commit -m \"fix: handle edge case\" && git push origin main",
    "matrix = [[1, 2, 3],\n          [4, 5, 6],\n          [7, 8, 9]]",
    "    \n    \n",
]

_WHITESPACE = [
    "two  spaces",
    "three   spaces",
    "line1\nline2",
    "line1\n\nline2",
    "line1\r\nline2\r\n",
    "carriage\rreturn",
    "\n\n\n",
    "trailing newline\n",
    "\nleading newline",
    " \n \n ",
    "\t\n\t\n",
    "a\u00a0b non-breaking",
    "a\u3000b ideographic space",
    "a\u2028b line separator \u2029 paragraph",
    "a\u200bb zero width space",
    "a\u200cb\u200dc zero width (non)joiners",
    "\ufeffBOM at start",
    "soft\u00adhyphen",
    "form\x0cfeed and vertical\x0btab",
    "nul\x00byte and bell\x07",
    "escape \x1b[31mred\x1b[0m",
    "\u2003em\u2002en\u2009thin\u200ahair spaces",
]
_WHITESPACE += [" " * n + "x" for n in (1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 40)]
_WHITESPACE += ["x" + "\n" * n + "y" for n in (1, 2, 3, 4, 10, 31, 32, 40)]
_WHITESPACE += ["x" + "\t" * n + "y" for n in (1, 2, 3, 8, 31, 40)]
_WHITESPACE += [" " * n for n in (3, 10, 64)]

_NUMBERS = [
    "0", "7", "42", "123", "1234", "12345", "123456789012345678901234567890",
    "3.14159265358979", "1,000,000", "1.000.000,50", "-17", "+42", "1/2 3/4 7/8",
    "2024-01-15T13:45:30Z", "(555) 123-4567", "192.168.0.1:8080", "v1.2.3-beta.4",
    "100% 50\u00b0C 9\u00b5m 5\u2009kg",
    "\u00bd \u00bc \u00be \u2153 \u2154",
    "x\u00b2 + y\u00b3 = z\u2074, H\u2082O, CO\u2082",
    "\u2460\u2461\u2462 \u2160\u2161\u2162 \u2170\u2171",
    "\u0661\u0662\u0663 \u06f4\u06f5 \u0967\u0968\u0969 \u0e51\u0e52",
    "\uff11\uff12\uff13 fullwidth digits",
    "\U0001d7d9\U0001d7da\U0001d7db mathematical digits",
    "1st 2nd 3rd 4th 21st 102nd",
    "in 1999 and 2000 and 2023",
    "\u20ac9.99 \u00a35 \u00a51000 \u20b9250 \u20a9500 $0.01 \u20bf0.5",
    "pi=3.14, e=2.718, phi=1.618",
]

_SCRIPTS = [
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 fa\u00e7ade co\u00f6perate",
    "cafe\u0301 decomposed accent",
    "\u00c0 \u00e0 \u00c9 \u00e9 \u00d1 \u00f1 \u00dc \u00fc \u00df \u1e9e \u00c6 \u00e6 \u00d8 \u00f8 \u00c5 \u00e5",
    "Stra\u00dfe \u00fcber M\u00e4dchen \u00d6sterreich",
    "Vi\u1ec7t Nam, Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u",
    "Zo\u00eb \u0141\u00f3d\u017a \u017b\u00f3\u0142\u0107 \u010ce\u0161tina \u0159\u00ed\u0161e",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01",
    "\u6211\u7231\u81ea\u7136\u8bed\u8a00\u5904\u7406\u3002\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002",
    "\u7e41\u9ad4\u4e2d\u6587\u8207\u7c21\u9ad4\u4e2d\u6587",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002\u3072\u3089\u304c\u306a\u3068\u30ab\u30bf\u30ab\u30ca\u3002",
    "\u6771\u4eac\u30bf\u30ef\u30fc\u306f\u9ad8\u3044\u3067\u3059\u306d",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4. \uc548\ub155\ud558\uc138\uc694!",
    "\u0627\u0644\u0633\u0644\u0627\u0645 \u0639\u0644\u064a\u0643\u0645 \u0648\u0631\u062d\u0645\u0629 \u0627\u0644\u0644\u0647",
    "\u0627\u0644\u0644\u063a\u0629 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u062c\u0645\u064a\u0644\u0629 \u062c\u062f\u0627\u064b.",
    "\u0645\u064f\u062d\u064e\u0645\u0651\u064e\u062f diacritics",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e, \u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u041a\u0430\u043a \u0434\u0435\u043b\u0430?",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac: \u03b1\u03b2\u03b3\u03b4\u03b5 \u03a9\u03bc\u03ad\u03b3\u03b1",
    "\u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8 \u10d4\u10dc\u10d0",
    "\u12a0\u121b\u122d\u129b \u124b\u1295\u124b",
    "\u0939\u093f\u0902\u0926\u0940 and English mixed \u4e2d\u6587 mixed",
    "\u0986\u09ae\u09bf \u09ac\u09be\u0982\u09b2\u09be\u09af\u09bc \u0995\u09a5\u09be \u09ac\u09b2\u09bf",
    "\u0ba4\u0bae\u0bbf\u0bb4\u0bcd \u0bae\u0bca\u0bb4\u0bbf",
    "\u0540\u0561\u0575\u0565\u0580\u0565\u0576 \u056c\u0565\u0566\u0578\u0582",
    "T\u00fcrk\u00e7e \u0131\u0130 \u015f\u015e \u011f\u011e",
    "\u0e9e\u0eb2\u0eaa\u0eb2\u0ea5\u0eb2\u0ea7 \u1797\u17b6\u179f\u17b6\u1781\u17d2\u1798\u17c2\u179a",
    "\U00020000\U0002a6d6 rare CJK extension B",
    "\u1f00\u1f01 polytonic \u1fe6 Greek",
    "\u2200x\u2208\u211d: x\u00b2 \u2265 0 \u2227 \u2211\u1d62 a\u1d62 \u2264 \u222b f(x)dx \u221a2 \u2248 1.414 \u221e",
    "\u2190 \u2192 \u2191 \u2193 \u21d2 \u21d4 \u2713 \u2717 \u2605 \u2606 \u2660 \u2663 \u2665 \u2666",
    "\u250c\u2500\u2500\u2510\n\u2502ab\u2502\n\u2514\u2500\u2500\u2518 box drawing",
    "\u00a9 \u00ae \u2122 \u00a7 \u00b6 \u2020 \u2021 \u2022 \u00b7",
    "\uff28\uff45\uff4c\uff4c\uff4f fullwidth latin",
    "\U0001d573\U0001d58a\U0001d591\U0001d591\U0001d594 mathematical fraktur",
]

_EMOJI = [
    "\U0001f600",
    "I love \U0001f355 and \U0001f363!",
    "\U0001f44d\U0001f3fb \U0001f44d\U0001f3fd \U0001f44d\U0001f3ff",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family",
    "\U0001f469\u200d\U0001f4bb\U0001f9d1\u200d\U0001f52c\U0001f468\u200d\U0001f373",
    "\U0001f3f3\ufe0f\u200d\U0001f308 \U0001f3f4\u200d\u2620\ufe0f",
    "\U0001f1fa\U0001f1f8 \U0001f1ef\U0001f1f5 \U0001f1e9\U0001f1ea flags",
    "1\ufe0f\u20e3 #\ufe0f\u20e3 keycaps",
    "\u2764\ufe0f \u2764 \u263a\ufe0f \u263a",
    "\U0001fae9 \U0001f972 \U0001fa75",
    "\U0001f5fd\u20e2\u20e2\U0001f5ff",
    "\U0001f914\u27a1\ufe0f\U0001f331\U0001f30e\u2728\u27a1\ufe0f\U0001f6b6\u2642\ufe0f\U0001f6b6\u2640\ufe0f\u2753",
    "\U0001f9d1\U0001f3fe\u200d\U0001f91d\u200d\U0001f9d1\U0001f3fb",
    "emoji\U0001f525in\U0001f4afwords",
    "\U0001f600\U0001f603\U0001f604\U0001f601\U0001f606\U0001f605\U0001f923\U0001f602",
    ":) :-( ;) :D xD <3 \u00af\\_(\u30c4)_/\u00af",
]

_FAKE_SPECIAL = [
    "<bos>",
    "<eos>",
    "<bos>Hello<eos>",
    "<start_of_turn>user\nWho are you?<end_of_turn>\n<start_of_turn>model",
    "<start_of_turn>user\nhi<end_of_turn>\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>",
    "<|im_start|>assistant\n",
    "<|endoftext|>",
    "text<|endoftext|>more text",
    "<|eot_id|><|begin_of_text|><|start_header_id|>",
    "<end_of_turn>",
    "< bos > <eos > <|im_end |>",
    "<unused0> <unused10> blahblahblah",
    "<pad><unk><mask>",
    "[multimodal] <start_of_image>",
    "<0x41><0xFF>",
    "<s></s>[INST] hello [/INST]",
    "<<SYS>>\nsystem\n<</SYS>>",
    "<|im_end|><|im_end|><|im_end|>",
    "<|im_start|><|im_end|>",
    "<repo_name>foo<file_sep><filename>a.py<gh_stars>10",
    "\u2581 literal lower one eighth block \u2581\u2581 twice",
    "\u0120 literal G with dot \u010a",
    "<",
    "<|",
    "|>",
    "<end",
    "Use <br> and </div> tags <tag attr=\"1\"/>",
]

_EMPTY = [""]


def _mixed() -> list[str]:
    out = []
    words = ["token", "\u00e9t\u00e9", "\u6570\u636e", "\u0645\u0631\u062d\u0628\u0627", "\U0001f680", "42", "don't", "x_y"]
    seps = [" ", "  ", "\n", "\t", "", ", ", " \n"]
    for i, w in enumerate(words):
        for j, s in enumerate(seps):
            if (i + j) % 3 == 0:
                out.append(s.join([w, words[(i + j) % len(words)], w]))
    return out


CORPUS: list[str] = _PROSE + _CODE + _WHITESPACE + _NUMBERS + _SCRIPTS + _EMOJI + _FAKE_SPECIAL + _EMPTY + _mixed()

assert len(CORPUS) >= 200, len(CORPUS)
