"""Language-aware vocabulary trimming: keep the tokens some languages use, drop the rest.

A multilingual model spends much of its size on the vocabulary (Gemma 3
270M: 168M of its 268M parameters are the 262,144-row embedding). A model
that only has to serve a few languages needs only the rows their text uses.
Trimming

1. tokenizes the chosen languages' text with the original tokenizer and
   counts every token id (`count_token_ids`);
2. keeps the ids seen at least `min_count` times, plus every id the
   tokenizer cannot do without (`always_kept_ids`): special and control
   tokens, added tokens, byte-fallback tokens, and for tokenizers with no
   byte fallback every single-character piece, so that text in any script
   still segments into kept pieces;
   with `keep_script_rank` N (`script_rank_ids`), also every piece among
   the tokenizer's N best-ranked pieces written only in the kept languages'
   scripts (or in none: digits, punctuation, the space marker), and every
   single character of those scripts, so that words the text never used
   still find their pieces;
   with `keep_common` N (`common_word_ids`), also the N pieces the kept
   languages' most common words use most (word frequency lists of broad
   text from the `wordfreq` package, each language weighted equally), the
   words a user's text has that one corpus never used;
3. for BPE, adds the pieces each kept piece is built from on its way
   (`bpe_build_pieces`): BPE reaches "▁the" through "▁t" or "he", which
   need not appear in the output, and without them the merge could not run;
4. rebuilds the tokenizer over the kept ids (`trim_tokenizer`) and slices the
   embedding and the LM head to the kept rows (`slice_vocabulary_rows`).

New id i is old id `kept_ids[i]` (kept in ascending order, so special
tokens keep their relative order). Text whose original tokens were all kept
tokenizes to the same pieces as before: BPE still finds every merge it used
(a merge is dropped only when one of its inputs or its result was, and the
dropped merges were not the best candidates before, so the best stays the
best); unigram's best segmentation is still available and nothing better
was added. Text that needs a removed piece falls back to shorter pieces,
down to single characters or bytes, never to the unknown token.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import regex
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for

BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
# Placeholder control tokens reserved for future use (Gemma has 6,242 of them).
RESERVED_PIECE = re.compile(r"^<unused\d+>$")
SPACE_SYMBOL = "▁"  # SentencePiece's visible space (U+2581)
SUPPORTED_MODELS = ("BPE", "Unigram", "WordLevel")
# Config fields that hold token ids, remapped to the new ids.
TOKEN_ID_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "unk_token_id", "sep_token_id", "cls_token_id",
                   "mask_token_id", "decoder_start_token_id")


@dataclass
class VocabularyTrim:
    """What trimming kept: the old id of each new id, and why."""

    kept_ids: list[int]  # ascending; new id i is old id kept_ids[i]
    original_size: int  # rows of the original embedding
    languages: list[str]
    seen_ids: int  # distinct ids the text used at least min_count times
    required_ids: int  # ids kept because the tokenizer needs them (special, added, fallback, BPE build pieces)
    min_count: int = 1
    sources: dict = field(default_factory=dict)  # corpus, split, extra files: where the text came from
    # --keep-script-rank: the rank cut, the Unicode scripts it kept, and the ids it alone kept (None: rule off)
    keep_script_rank: int | None = None
    scripts: list[str] = field(default_factory=list)
    rule_ids: int = 0  # ids the keep rules (script rank, common words) alone kept
    # --keep-common: how many pieces of common words, and the kept languages that have no word list (None: rule off)
    keep_common: int | None = None
    no_word_list: list[str] = field(default_factory=list)

    def record(self) -> dict:
        rule = {} if self.keep_script_rank is None else {"keep_script_rank": self.keep_script_rank, "scripts": self.scripts}
        if self.keep_common is not None:
            rule |= {"keep_common": self.keep_common, "no_word_list": self.no_word_list}
        if rule:
            rule["rule_tokens"] = self.rule_ids
        return {
            "languages": self.languages, "kept_tokens": len(self.kept_ids), "original_vocab_size": self.original_size,
            "seen_tokens": self.seen_ids, "required_tokens": self.required_ids, "min_count": self.min_count,
            **rule, **self.sources, "kept_ids": self.kept_ids,
        }


# ----- the tokenizer as JSON ---------------------------------------------------------


def tokenizer_json(tokenizer: PreTrainedTokenizerBase) -> dict:
    """The `tokenizers` serialisation of a fast tokenizer (model, added tokens, post-processor...)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise BabelpruneError(
            f"The tokenizer {type(tokenizer).__name__} is not a fast (`tokenizers`) tokenizer; "
            "save the model with a tokenizer.json and trim that folder."
        )
    spec = json.loads(backend.to_str())
    if spec["model"]["type"] not in SUPPORTED_MODELS:
        raise BabelpruneError(
            f"Vocabulary trimming supports {', '.join(SUPPORTED_MODELS)} tokenizers, not {spec['model']['type']}; "
            "choose a model with one of those tokenizers."
        )
    return spec


def model_pieces(spec: dict) -> dict[int, str]:
    """id -> piece of the tokenizer model (added tokens outside the model are not included)."""
    model = spec["model"]
    if model["type"] == "Unigram":
        return {i: piece for i, (piece, _score) in enumerate(model["vocab"])}
    return {i: piece for piece, i in model["vocab"].items()}


def _merge_pairs(spec: dict) -> list[tuple[str, str]]:
    """BPE merges as pairs, best first (older files store them as "a b" strings)."""
    merges = spec["model"].get("merges") or []
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in merges]


# ----- which ids to keep -------------------------------------------------------------


def count_token_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], batch: int = 1024) -> Counter[int]:
    """How often each token id occurs when `texts` are tokenized one by one (no special tokens added)."""
    counts: Counter[int] = Counter()
    for start in range(0, len(texts), batch):
        for ids in tokenizer(list(texts[start:start + batch]), add_special_tokens=False)["input_ids"]:
            counts.update(ids)
    return counts


def always_kept_ids(tokenizer: PreTrainedTokenizerBase, spec: dict, config, keep_reserved: bool = True) -> set[int]:
    """Ids a trimmed tokenizer cannot do without, whatever the text.

    Added tokens (special, control, user-defined), the tokenizer's named
    special tokens and the config's token ids; the unknown token; BPE's byte
    pieces when it falls back to bytes; and, without byte fallback, every
    single-character piece and the space symbol, the pieces any word can be
    spelled with. `keep_reserved=False` drops the "<unusedN>" placeholders.
    """
    model = spec["model"]
    keep = {token["id"] for token in spec["added_tokens"]
            if keep_reserved or not RESERVED_PIECE.match(token["content"])}
    keep |= set(tokenizer.all_special_ids)
    keep |= {getattr(config, name) for name in TOKEN_ID_FIELDS if isinstance(getattr(config, name, None), int)}
    pieces = model_pieces(spec)
    if model["type"] == "Unigram" and model.get("unk_id") is not None:
        keep.add(model["unk_id"])
    if model.get("unk_token") in (model.get("vocab") or {}):
        keep.add(model["vocab"][model["unk_token"]])
    if model.get("byte_fallback"):
        keep |= {i for i, piece in pieces.items() if BYTE_PIECE.match(piece)}
    if not (model["type"] == "BPE" and model.get("byte_fallback")):
        keep |= {i for i, piece in pieces.items() if len(piece) == 1 or piece == SPACE_SYMBOL}
    return keep


def bpe_build_pieces(pieces: Iterable[str], vocab: dict[str, int], merges: Sequence[tuple[str, str]]) -> set[str]:
    """Every intermediate piece BPE forms on its way to each of `pieces`.

    BPE merges, inside a word, the adjacent pair with the best-ranked merge,
    over and over. The merges that form a final piece happen inside its span
    and in the same order as when the piece alone is tokenized, so replaying
    BPE on each piece's characters finds the pieces it is built from.
    Characters missing from the vocabulary are bytes, which merge with nothing.
    """
    rank = {pair: i for i, pair in enumerate(merges)}
    built: set[str] = set()
    for piece in pieces:
        symbols = list(piece)
        built.update(symbols)  # the characters BPE starts from (those missing from the vocabulary are bytes)
        while len(symbols) > 1:
            ranks = [rank.get((a, b), len(rank)) for a, b in zip(symbols, symbols[1:])]
            best = min(range(len(ranks)), key=ranks.__getitem__)
            if ranks[best] == len(rank):
                break  # no merge applies: a user-defined or unreachable piece
            symbols[best:best + 2] = [symbols[best] + symbols[best + 1]]
            built.add(symbols[best])
        built.update(symbols)
    return built & vocab.keys()


# Characters every script shares: digits, punctuation, symbols, the space marker (Common) and
# combining marks used across scripts, such as Arabic vowel signs (Inherited).
SHARED_SCRIPTS = ("Common", "Inherited")
_SHARED_ONLY = regex.compile(r"[\p{Script=Common}\p{Script=Inherited}]+")


def _script_pattern(scripts: Iterable[str]):
    """A regex matching a whole piece written only in `scripts` and the shared characters."""
    classes = "".join(rf"\p{{Script={name}}}" for name in (*scripts, *SHARED_SCRIPTS))
    try:
        return regex.compile(f"[{classes}]+")
    except regex.error as error:  # an unknown script name: say which, not the regex's own words
        raise BabelpruneError(f"Unknown Unicode script among {', '.join(scripts)}: {error}; name scripts as Unicode does (Latin, Han...).") from None


def piece_script(piece: str, candidates: Iterable[str]) -> str | None:
    """The one script among `candidates` that `piece`'s letters are written in.

    "Common" when the piece has no letters of any script (digits, punctuation, "▁");
    None when its letters mix scripts or belong to none of the candidates.
    """
    letters = _SHARED_ONLY.sub("", piece)
    if not letters:
        return "Common"
    for name in candidates:
        if regex.fullmatch(rf"\p{{Script={name}}}+", letters):
            return name
    return None


def ranked_piece_ids(spec: dict) -> list[int]:
    """The tokenizer model's ordinary pieces, best first in its own order (added tokens and bytes left out).

    Unigram pieces carry scores: best score first. BPE and WordLevel files carry
    no scores; SentencePiece-made ones (Gemma's) number pieces in score order,
    and merge-trained BPE numbers them in the order the merges were learnt, so
    the id order is the tokenizer's ranking.
    """
    added = {token["id"] for token in spec["added_tokens"]}
    pieces = model_pieces(spec)
    ordinary = [i for i in sorted(pieces) if i not in added and not BYTE_PIECE.match(pieces[i])]
    if spec["model"]["type"] == "Unigram":
        scores = spec["model"]["vocab"]
        ordinary.sort(key=lambda i: -scores[i][1])  # stable: equal scores stay in id order
    return ordinary


def script_rank_ids(spec: dict, scripts: Sequence[str], max_rank: int) -> set[int]:
    """Ids `--keep-script-rank max_rank` keeps for text in `scripts` (Unicode Script values).

    Every piece among the `max_rank` best-ranked ones (`ranked_piece_ids`)
    written only in `scripts` and the shared characters, plus every
    single-character piece of `scripts` whatever its rank: SentencePiece
    ranks the single characters after all merged pieces, so a rank cut would
    drop the characters the text never used, and an unseen letter would cost
    its two to four UTF-8 bytes as separate tokens.
    """
    if max_rank < 1:
        raise BabelpruneError(f"--keep-script-rank must be at least 1 (got {max_rank}); it is how many of the tokenizer's best-ranked pieces are considered.")
    if not scripts:
        raise BabelpruneError("--keep-script-rank needs at least one script to keep; name the languages to keep.")
    written = _script_pattern(scripts)
    letter = _script_pattern(())  # shared characters only, to tell a letter from punctuation
    pieces = model_pieces(spec)
    ranked = ranked_piece_ids(spec)
    keep = {i for i in ranked[:max_rank] if written.fullmatch(pieces[i])}
    keep |= {i for i in ranked if len(pieces[i]) == 1 and written.fullmatch(pieces[i]) and not letter.fullmatch(pieces[i])}
    return keep


# How a word appears in running text, and how often in each form: mostly after a space, sometimes capitalised
# (a sentence's start, a name), sometimes with no space before it (after a line break or a quote).
WORD_FORMS = ((" {}", 0.6), (" {Cap}", 0.2), ("{}", 0.1), ("{Cap}", 0.1))
# Scripts written without spaces between words: a word list's entries are only ever glued to their neighbours.
UNSPACED_SCRIPTS = ("Han", "Hiragana", "Katakana", "Thai", "Lao", "Khmer", "Myanmar", "Tibetan")
WORDS_PER_LANGUAGE = 30_000  # the most frequent words of each list that are tokenized


def word_piece_shares(tokenizer: PreTrainedTokenizerBase, words: dict[str, float], unspaced: bool) -> Counter[int]:
    """How much of a language's running text each token id makes up, estimated from its word frequencies.

    `words` maps a word to its frequency in broad text; each word is tokenized
    in the forms it takes in running text (`WORD_FORMS`; as written only, for
    `unspaced` scripts), and each piece is credited with the word's frequency
    times the form's share. The shares are normalised to sum to 1.
    """
    forms = (("{}", 1.0),) if unspaced else WORD_FORMS
    listed = list(words)
    shares: Counter[int] = Counter()
    for form, weight in forms:
        texts = [form.format(word, Cap=word[:1].upper() + word[1:]) for word in listed]
        for word, ids in zip(listed, tokenizer(texts, add_special_tokens=False)["input_ids"]):
            for token_id in ids:
                shares[token_id] += words[word] * weight
    total = sum(shares.values())
    return Counter({token_id: value / total for token_id, value in shares.items()}) if total else shares


def common_word_lists(languages: Sequence[str]) -> dict[str, dict[str, float]]:
    """The `WORDS_PER_LANGUAGE` most frequent words and their frequencies of each language `wordfreq` has a list for."""
    try:
        import wordfreq
    except ImportError:
        raise BabelpruneError("--keep-common reads word frequency lists from the wordfreq package; install it with "
                              "pip install 'babelprune[words]'.") from None
    available = wordfreq.available_languages(wordlist="best")
    lists = {}
    for lang in languages:
        if lang in available:
            frequencies = wordfreq.get_frequency_dict(lang, wordlist="best")
            top = sorted(frequencies, key=frequencies.get, reverse=True)[:WORDS_PER_LANGUAGE]
            lists[lang] = {word: frequencies[word] for word in top}
    return lists


def common_word_ids(tokenizer: PreTrainedTokenizerBase, word_lists: dict[str, dict[str, float]],
                    scripts: dict[str, tuple[str, ...]], count: int, already: set[int]) -> set[int]:
    """The `count` ids, beyond `already`, that the languages' common words use most, each language weighted equally.

    `word_lists`: language -> {word: frequency} (`common_word_lists`);
    `scripts`: language -> the Unicode scripts it is written in.
    """
    if count < 1:
        raise BabelpruneError(f"--keep-common must be at least 1 (got {count}); it is how many pieces of common words to keep.")
    score: Counter[int] = Counter()
    for lang, words in word_lists.items():
        unspaced = any(name in UNSPACED_SCRIPTS for name in scripts.get(lang, ()))
        for token_id, share in word_piece_shares(tokenizer, words, unspaced).items():
            score[token_id] += share / len(word_lists)
    ranked = sorted((i for i in score if i not in already), key=lambda i: (-score[i], i))  # ties: lower id first
    return set(ranked[:count])


def choose_kept_ids(
    tokenizer: PreTrainedTokenizerBase,
    config,
    counts: Counter[int],
    embedding_rows: int,
    min_count: int = 1,
    keep_reserved: bool = True,
    also_keep: Iterable[int] = (),
) -> tuple[list[int], int, int]:
    """(kept ids ascending, ids seen often enough, ids kept because the tokenizer needs them).

    `also_keep`: ids a keep rule adds (`script_rank_ids`); those neither the text nor the
    tokenizer needed are counted in neither number (they are the rest of the kept ids).
    """
    if min_count < 1:
        raise BabelpruneError(f"--min-count must be at least 1 (got {min_count}); 1 keeps every token the text uses.")
    spec = tokenizer_json(tokenizer)
    seen = {i for i, n in counts.items() if n >= min_count}
    required = always_kept_ids(tokenizer, spec, config, keep_reserved)
    beyond = sorted(i for i in required if i >= embedding_rows)
    if beyond:
        token = tokenizer.convert_ids_to_tokens(beyond[0])
        raise BabelpruneError(
            f"The tokenizer's special token {token!r} has id {beyond[0]}, beyond the model's {embedding_rows} "
            "embedding rows, so a trimmed vocabulary would lose it; resize the model's embeddings to the tokenizer first."
        )
    if not seen:  # only what the tokenizer needs anyway would be left: the text's own tokens all gone
        most = max(counts.values(), default=0)
        raise BabelpruneError(
            f"--min-count {min_count} keeps none of the tokens the text uses (the most frequent one appears {most:,} "
            f"times); give --min-count {max(1, most)} or less."
        )
    also_keep = set(also_keep)
    kept = seen | required | also_keep
    if spec["model"]["type"] == "BPE":
        pieces = model_pieces(spec)
        vocab = spec["model"]["vocab"]
        kept |= {vocab[p] for p in bpe_build_pieces((pieces[i] for i in kept if i in pieces), vocab, _merge_pairs(spec))}
    kept = {i for i in kept if i < embedding_rows}
    return sorted(kept), len(seen), len(kept - seen - (also_keep - required))


# ----- rebuilding the tokenizer --------------------------------------------------------


def _trimmed_model_json(model: dict, old_to_new: dict[int, int], pieces: dict[int, str]) -> dict:
    """The tokenizer model over the kept ids only, renumbered."""
    model = dict(model)
    if model["type"] == "Unigram":
        model["vocab"] = [entry for i, entry in enumerate(model["vocab"]) if i in old_to_new]
        if model.get("unk_id") is not None:
            model["unk_id"] = old_to_new[model["unk_id"]]
        return model
    model["vocab"] = {pieces[old]: new for old, new in old_to_new.items() if old in pieces}
    if model["type"] == "BPE":
        kept = model["vocab"]
        # A merge survives only when both inputs and its result were kept.
        model["merges"] = [[a, b] for a, b in _merge_pairs({"model": model}) if a in kept and b in kept and a + b in kept]
    return model


def _renumber_specials(node, old_to_new: dict[int, int]):
    """Post-processor templates name special tokens with their ids: renumber them (recursively)."""
    if isinstance(node, list):
        return [_renumber_specials(item, old_to_new) for item in node]
    if not isinstance(node, dict):
        return node
    renumbered = {key: _renumber_specials(value, old_to_new) for key, value in node.items()}
    if isinstance(node.get("ids"), list) and "tokens" in node:  # TemplateProcessing special_tokens entry
        renumbered["ids"] = [old_to_new[i] for i in node["ids"]]
    for key in ("sep", "cls"):  # RobertaProcessing / BertProcessing: [token, id]
        if isinstance(node.get(key), list) and len(node[key]) == 2 and isinstance(node[key][1], int):
            renumbered[key] = [node[key][0], old_to_new[node[key][1]]]
    return renumbered


def trimmed_tokenizer_json(spec: dict, kept_ids: Sequence[int]) -> dict:
    """The tokenizer serialisation with only `kept_ids`, renumbered 0..len(kept_ids)-1."""
    old_to_new = {old: new for new, old in enumerate(kept_ids)}
    pieces = model_pieces(spec)
    trimmed = dict(spec)
    trimmed["model"] = _trimmed_model_json(spec["model"], old_to_new, pieces)
    trimmed["added_tokens"] = [{**token, "id": old_to_new[token["id"]]} for token in spec["added_tokens"]
                               if token["id"] in old_to_new]
    trimmed["post_processor"] = _renumber_specials(spec.get("post_processor"), old_to_new)
    return trimmed


def trim_tokenizer(tokenizer: PreTrainedTokenizerBase, kept_ids: Sequence[int]) -> PreTrainedTokenizerBase:
    """A tokenizer of the same class and settings whose vocabulary is `kept_ids` (new id = position)."""
    import tempfile
    from pathlib import Path

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    backend = Tokenizer.from_str(json.dumps(trimmed_tokenizer_json(tokenizer_json(tokenizer), kept_ids)))
    # Save the original's settings (class, special tokens, padding side) and swap in the trimmed
    # backend; reloading from files makes the tokenizer exactly what AutoTokenizer will load later.
    with tempfile.TemporaryDirectory(prefix="babelprune-vocab-") as scratch:
        tokenizer.save_pretrained(scratch)
        for stale in Path(scratch).iterdir():  # slow-tokenizer files still describe the whole vocabulary
            if stale.name not in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                stale.unlink()
        backend.save(str(Path(scratch) / "tokenizer.json"))
        config_file = Path(scratch) / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config.pop("added_tokens_decoder", None)  # keyed by old ids; tokenizer.json has the added tokens
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
        return AutoTokenizer.from_pretrained(scratch, trust_remote_code=False)  # files babelprune just wrote


# ----- slicing the model --------------------------------------------------------------


@torch.no_grad()
def slice_vocabulary_rows(model: PreTrainedModel, kept_ids: Sequence[int]) -> None:
    """Keep only rows `kept_ids` of the token embedding and of the LM head (tied or not), in place."""
    adapter = adapter_for(model)
    index = torch.tensor(list(kept_ids), dtype=torch.long)
    old_to_new = {old: new for new, old in enumerate(kept_ids)}
    embedding = adapter.get_embeddings(model)
    head = adapter.get_lm_head(model)
    tied = adapter.lm_head_is_tied(model)
    # Same module objects (Gemma scales its embedding in forward), new (kept, width) weights.
    embedding.weight = nn.Parameter(embedding.weight[index].clone())
    embedding.num_embeddings = len(index)
    if embedding.padding_idx is not None:
        embedding.padding_idx = old_to_new.get(embedding.padding_idx)
    if head is not None:
        head.weight = embedding.weight if tied else nn.Parameter(head.weight[index].clone())  # (kept, width)
        if getattr(head, "bias", None) is not None:
            head.bias = nn.Parameter(head.bias[index].clone())
        head.out_features = len(index)
    _renumber_config(model, old_to_new, len(index))


def _renumber_config(model: PreTrainedModel, old_to_new: dict[int, int], size: int) -> None:
    """The config's vocabulary size and token ids in the new numbering."""
    configs = {id(c): c for c in (model.config, model.config.get_text_config())}.values()
    targets = [*configs, getattr(model, "generation_config", None)]
    for config in filter(None, targets):
        if hasattr(config, "vocab_size"):
            config.vocab_size = size
        for name in TOKEN_ID_FIELDS:
            value = getattr(config, name, None)
            if isinstance(value, int):
                setattr(config, name, old_to_new.get(value))
            elif isinstance(value, list):
                setattr(config, name, [old_to_new[v] for v in value if v in old_to_new])
    if hasattr(model, "vocab_size"):
        model.vocab_size = size


def compose_ids(parent_ids: Sequence[int] | None, kept_ids: Sequence[int]) -> list[int]:
    """Ids in the original vocabulary of a model trimmed twice (parent_ids: the first trim's kept ids)."""
    return list(kept_ids) if parent_ids is None else [parent_ids[i] for i in kept_ids]
