"""A library's tokenizer as one `tokenizers.Tokenizer`, saved beside a text graph as
tokenizer.json so serving needs neither torch nor transformers nor open_clip.

- a transformers fast tokenizer (CLIP's BPE, SigLIP 2's Gemma): its own backend, copied;
- SigLIP's SentencePiece tokenizer: its unigram model, behind SigLIP's text canonicalisation
  (lowercase, ASCII punctuation removed, whitespace collapsed) and an `</s>` at the end;
- open_clip's own BPE (`SimpleTokenizer`): its vocabulary and merges, with its cleaning
  (whitespace collapsed, lowercased) and `<start_of_text>`/`<end_of_text>` around the tokens;
- open_clip's `HFTokenizer`: the transformers tokenizer it wraps, behind its cleaning.

Nothing here is trusted blindly: `embeddings.models.family_export.check_tokenizer` refuses an
export whose converted tokenizer gives other ids than the library's on the probe texts.
"""

from __future__ import annotations

import re
import string

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors

from embeddings.errors import ModelLoadError

#: Python's `string.punctuation` as a regex class (what SigLIP and open_clip remove).
PUNCTUATION = "[" + re.escape(string.punctuation) + "]"
#: open_clip's and CLIP's word pattern.
CLIP_WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _clean(kind: str) -> list:
    """open_clip / SigLIP text cleaning as `tokenizers` normalizers."""
    whitespace = [normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    if kind == "whitespace":
        return whitespace
    if kind == "lower":
        return [*whitespace, normalizers.Lowercase()]
    if kind == "canonicalize":
        return [
            normalizers.Replace("_", " "),
            normalizers.Replace(Regex(PUNCTUATION), ""),
            normalizers.Lowercase(),
            *whitespace,
        ]
    raise ModelLoadError(f"text cleaning {kind!r} cannot be reproduced for serving")


def _prepend(tokenizer: Tokenizer, steps: list) -> Tokenizer:
    if tokenizer.normalizer is not None:
        steps = [*steps, tokenizer.normalizer]
    tokenizer.normalizer = normalizers.Sequence(steps)
    return tokenizer


def serving_tokenizer(tokenizer) -> Tokenizer:
    """A `tokenizers.Tokenizer` for a transformers tokenizer (see the module docstring)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return Tokenizer.from_str(backend.to_str())
    if type(tokenizer).__name__ == "SiglipTokenizer":
        return _siglip(tokenizer)
    from transformers.convert_slow_tokenizer import convert_slow_tokenizer

    return convert_slow_tokenizer(tokenizer)


def _siglip(tokenizer) -> Tokenizer:
    """SigLIP's SentencePiece unigram model behind its canonicalisation, `</s>` appended."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2
    from tokenizers.models import Unigram

    proto = model_pb2.ModelProto()
    proto.ParseFromString(tokenizer.sp_model.serialized_model_proto())
    vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    result = Tokenizer(Unigram(vocab, unk_id=proto.trainer_spec.unk_id, byte_fallback=False))
    steps = _clean("canonicalize" if tokenizer.do_lower_case else "whitespace")
    charsmap = proto.normalizer_spec.precompiled_charsmap
    if charsmap:
        steps.append(normalizers.Precompiled(charsmap))
    result.normalizer = normalizers.Sequence(steps)
    result.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    result.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    eos = str(tokenizer.eos_token)
    result.post_processor = processors.TemplateProcessing(
        single=["$A", eos], special_tokens=[(eos, tokenizer.convert_tokens_to_ids(eos))]
    )
    result.add_special_tokens([eos, str(tokenizer.pad_token), str(tokenizer.unk_token)])
    return result


def open_clip_tokenizer(tokenizer) -> Tokenizer:
    """A `tokenizers.Tokenizer` for an open_clip tokenizer (`SimpleTokenizer`/`HFTokenizer`)."""
    from open_clip import tokenizer as oc

    kinds = {oc._clean_lower: "lower", oc._clean_whitespace: "whitespace"}
    kinds[oc._clean_canonicalize] = "canonicalize"
    kind = kinds.get(getattr(tokenizer, "clean_fn", None))
    if kind is None:
        raise ModelLoadError(
            f"open_clip's tokenizer {type(tokenizer).__name__} cleans text in "
            "a way that cannot be reproduced for serving"
        )
    if isinstance(tokenizer, oc.HFTokenizer):
        return _prepend(serving_tokenizer(tokenizer.tokenizer), _clean(kind))
    if type(tokenizer) is not oc.SimpleTokenizer or getattr(tokenizer, "reduction_fn", None):
        raise ModelLoadError(
            f"open_clip's tokenizer {type(tokenizer).__name__} cannot be converted for serving"
        )
    return _simple_bpe(tokenizer, kind)


def _simple_bpe(tokenizer, kind: str) -> Tokenizer:
    """open_clip's `SimpleTokenizer` (CLIP's byte-level BPE with `</w>` word ends)."""
    from tokenizers.models import BPE

    merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get)
    result = Tokenizer(
        BPE(
            vocab=dict(tokenizer.encoder),
            merges=[tuple(pair) for pair in merges],
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            dropout=None,
        )
    )
    result.normalizer = normalizers.Sequence([normalizers.NFC(), *_clean(kind)])
    result.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_WORDS), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    result.decoder = decoders.ByteLevel()
    start, end = (tokenizer.decoder[i] for i in tokenizer.all_special_ids[:2])
    result.post_processor = processors.TemplateProcessing(
        single=[start, "$A", end],
        special_tokens=[(start, tokenizer.sot_token_id), (end, tokenizer.eot_token_id)],
    )
    result.add_special_tokens([start, end])
    return result
