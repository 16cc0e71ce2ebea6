"""Language metadata: name, script and a resource level.

Resource levels follow the taxonomy of Joshi et al. (2020, "The State and
Fate of Linguistic Diversity"), which places languages in classes 0-5 by the
labelled and unlabelled data that exist for them. We map class 5 ("the
winners") to ``high``, class 4 to ``medium`` and classes 0-3 to ``low``.
Languages missing from the table are treated as ``low``: the long tail of the
UDHR is almost entirely in classes 0-2.

Language keys are BCP-47 style: an ISO 639 code (two letters where one
exists, else three), plus a script subtag where a language is written in
more than one script ('zh-Hans', 'sr-Cyrl').
"""

from __future__ import annotations

from dataclasses import dataclass

from babelprune.choices import ResourceLevel  # re-exported: its home is choices, so records need not import data

RESOURCE_LEVELS: tuple[ResourceLevel, ...] = ("high", "medium", "low")


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    script: str  # ISO 15924, e.g. 'Latn', 'Cyrl', 'Arab'
    joshi_class: int | None  # 0-5, None when unknown

    @property
    def resource(self) -> ResourceLevel:
        if self.joshi_class is None or self.joshi_class <= 3:
            return "low"
        return "high" if self.joshi_class == 5 else "medium"


# code: (name, script, Joshi et al. class)
_TABLE: dict[str, tuple[str, str, int]] = {
    # class 5
    "en": ("English", "Latn", 5),
    "es": ("Spanish", "Latn", 5),
    "de": ("German", "Latn", 5),
    "fr": ("French", "Latn", 5),
    "ja": ("Japanese", "Jpan", 5),
    "zh": ("Chinese", "Hans", 5),
    "zh-Hans": ("Chinese (Simplified)", "Hans", 5),
    "zh-Hant": ("Chinese (Traditional)", "Hant", 5),
    "ar": ("Arabic", "Arab", 5),
    # class 4
    "it": ("Italian", "Latn", 4),
    "pt": ("Portuguese", "Latn", 4),
    "ru": ("Russian", "Cyrl", 4),
    "pl": ("Polish", "Latn", 4),
    "tr": ("Turkish", "Latn", 4),
    "ko": ("Korean", "Kore", 4),
    "vi": ("Vietnamese", "Latn", 4),
    "hi": ("Hindi", "Deva", 4),
    "fa": ("Persian", "Arab", 4),
    "nl": ("Dutch", "Latn", 4),
    "cs": ("Czech", "Latn", 4),
    "fi": ("Finnish", "Latn", 4),
    "hu": ("Hungarian", "Latn", 4),
    "sv": ("Swedish", "Latn", 4),
    "ca": ("Catalan", "Latn", 4),
    "eu": ("Basque", "Latn", 4),
    "hr": ("Croatian", "Latn", 4),
    "sr": ("Serbian", "Cyrl", 4),
    "sr-Cyrl": ("Serbian (Cyrillic)", "Cyrl", 4),
    "sr-Latn": ("Serbian (Latin)", "Latn", 4),
    # class 3
    "ro": ("Romanian", "Latn", 3),
    "uk": ("Ukrainian", "Cyrl", 3),
    "id": ("Indonesian", "Latn", 3),
    "bn": ("Bengali", "Beng", 3),
    "tl": ("Tagalog", "Latn", 3),
    "ms": ("Malay", "Latn", 3),
    "he": ("Hebrew", "Hebr", 3),
    "th": ("Thai", "Thai", 3),
    "el": ("Greek", "Grek", 3),
    "bg": ("Bulgarian", "Cyrl", 3),
    "da": ("Danish", "Latn", 3),
    "no": ("Norwegian", "Latn", 3),
    "nb": ("Norwegian Bokmål", "Latn", 3),
    "sk": ("Slovak", "Latn", 3),
    "sl": ("Slovenian", "Latn", 3),
    "lt": ("Lithuanian", "Latn", 3),
    "lv": ("Latvian", "Latn", 3),
    "et": ("Estonian", "Latn", 3),
    "ta": ("Tamil", "Taml", 3),
    "ur": ("Urdu", "Arab", 3),
    "af": ("Afrikaans", "Latn", 3),
    "be": ("Belarusian", "Cyrl", 3),
    "gl": ("Galician", "Latn", 3),
    "ka": ("Georgian", "Geor", 3),
    "kk": ("Kazakh", "Cyrl", 3),
    "hy": ("Armenian", "Armn", 3),
    # class 2
    "sw": ("Swahili", "Latn", 2),
    "zu": ("Zulu", "Latn", 2),
    "xh": ("Xhosa", "Latn", 2),
    "mr": ("Marathi", "Deva", 2),
    "te": ("Telugu", "Telu", 1),
    "ml": ("Malayalam", "Mlym", 1),
    "kn": ("Kannada", "Knda", 1),
    "gu": ("Gujarati", "Gujr", 1),
    "pa": ("Punjabi", "Guru", 1),
    "ne": ("Nepali", "Deva", 1),
    "si": ("Sinhala", "Sinh", 0),
    "am": ("Amharic", "Ethi", 2),
    "ha": ("Hausa", "Latn", 2),
    "yo": ("Yoruba", "Latn", 2),
    "ig": ("Igbo", "Latn", 1),
    "so": ("Somali", "Latn", 1),
    "my": ("Burmese", "Mymr", 1),
    "km": ("Khmer", "Khmr", 1),
    "lo": ("Lao", "Laoo", 2),
    "mn": ("Mongolian", "Cyrl", 1),
    "uz": ("Uzbek", "Latn", 3),
    "az": ("Azerbaijani", "Latn", 1),
    "cy": ("Welsh", "Latn", 1),
    "ga": ("Irish", "Latn", 2),
    "is": ("Icelandic", "Latn", 2),
    "mt": ("Maltese", "Latn", 2),
    "jv": ("Javanese", "Latn", 1),
    "qu": ("Quechua", "Latn", 1),
    "gn": ("Guarani", "Latn", 1),
    "ht": ("Haitian Creole", "Latn", 2),
}

# A rough default script for a language key that is not in the table.
_SCRIPT_SUBTAGS = {"Latn", "Cyrl", "Arab", "Hans", "Hant", "Deva", "Beng", "Grek", "Hebr", "Ethi"}


# First word of a character's Unicode name -> ISO 15924 script code.
_UNICODE_SCRIPTS = {
    "LATIN": "Latn", "CYRILLIC": "Cyrl", "GREEK": "Grek", "ARABIC": "Arab", "HEBREW": "Hebr", "DEVANAGARI": "Deva",
    "BENGALI": "Beng", "TAMIL": "Taml", "TELUGU": "Telu", "KANNADA": "Knda", "MALAYALAM": "Mlym", "GUJARATI": "Gujr",
    "GURMUKHI": "Guru", "ORIYA": "Orya", "SINHALA": "Sinh", "THAI": "Thai", "LAO": "Laoo", "TIBETAN": "Tibt",
    "MYANMAR": "Mymr", "GEORGIAN": "Geor", "ARMENIAN": "Armn", "ETHIOPIC": "Ethi", "KHMER": "Khmr", "HANGUL": "Kore",
    "HIRAGANA": "Jpan", "KATAKANA": "Jpan", "CJK": "Hani", "THAANA": "Thaa", "CHEROKEE": "Cher", "MONGOLIAN": "Mong",
    "CANADIAN": "Cans", "TIFINAGH": "Tfng", "SYRIAC": "Syrc", "NKO": "Nkoo", "VAI": "Vaii", "YI": "Yiii",
}


# ISO 15924 code (the table's script column) -> the Unicode Script property values its text is written in.
# Vocabulary trimming's --keep-script-rank keeps pieces written in these scripts; a writing system that
# mixes scripts (Japanese, Korean) lists each of them.
UNICODE_SCRIPT_VALUES: dict[str, tuple[str, ...]] = {
    "Latn": ("Latin",), "Cyrl": ("Cyrillic",), "Grek": ("Greek",), "Arab": ("Arabic",), "Hebr": ("Hebrew",),
    "Deva": ("Devanagari",), "Beng": ("Bengali",), "Taml": ("Tamil",), "Telu": ("Telugu",), "Knda": ("Kannada",),
    "Mlym": ("Malayalam",), "Gujr": ("Gujarati",), "Guru": ("Gurmukhi",), "Orya": ("Oriya",), "Sinh": ("Sinhala",),
    "Thai": ("Thai",), "Laoo": ("Lao",), "Tibt": ("Tibetan",), "Mymr": ("Myanmar",), "Geor": ("Georgian",),
    "Armn": ("Armenian",), "Ethi": ("Ethiopic",), "Khmr": ("Khmer",), "Thaa": ("Thaana",), "Cher": ("Cherokee",),
    "Mong": ("Mongolian",), "Cans": ("Canadian_Aboriginal",), "Tfng": ("Tifinagh",), "Syrc": ("Syriac",),
    "Nkoo": ("Nko",), "Vaii": ("Vai",), "Yiii": ("Yi",),
    "Hans": ("Han",), "Hant": ("Han",), "Hani": ("Han",),
    "Jpan": ("Han", "Hiragana", "Katakana"), "Kore": ("Hangul", "Han"),
}


def unicode_scripts(code: str) -> tuple[str, ...] | None:
    """The Unicode scripts language `code` is written in (None when babelprune does not know its script)."""
    return UNICODE_SCRIPT_VALUES.get(language_info(code).script)


def guess_script(text: str) -> str | None:
    """The ISO 15924 code of the most common script among the letters of `text` (None if none is known)."""
    import unicodedata
    from collections import Counter

    counts: Counter[str] = Counter()
    for char in text[:2000]:
        if char.isalpha():
            script = _UNICODE_SCRIPTS.get(unicodedata.name(char, "").split(" ")[0])
            if script:
                counts[script] += 1
    return counts.most_common(1)[0][0] if counts else None


def language_info(code: str, name: str | None = None, script: str | None = None) -> Language:
    """Metadata for a language key; `name`/`script` fill in what the table does not know."""
    if code in _TABLE:
        known_name, known_script, joshi = _TABLE[code]
        return Language(code, known_name, known_script, joshi)
    base = code.split("-")[0]
    subtags = code.split("-")[1:]
    tag_script = next((t for t in subtags if t in _SCRIPT_SUBTAGS or (len(t) == 4 and t.istitle())), None)
    if base in _TABLE:
        known_name, known_script, joshi = _TABLE[base]
        return Language(code, name or known_name, tag_script or script or known_script, joshi)
    return Language(code, name or code, tag_script or script or "Zyyy", None)
