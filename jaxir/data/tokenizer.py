"""Tokenizers from local directories, the tokenizer check, and length buckets.

**Loading.** :func:`load_tokenizer` reads a directory holding ``tokenizer.json`` (any
Hugging Face fast tokenizer) or only a BERT ``vocab.txt``. It never downloads. With
transformers 5, ``BertTokenizerFast(vocab_file=...)`` given as a keyword silently builds
a 5-token vocabulary, so the vocab-only path always goes through
``from_pretrained(dir)`` and checks that the tokenizer size equals the number of lines
in ``vocab.txt``.

**Check.** A model depends on its tokenizer's special tokens, vocabulary size and
lowercasing: :func:`tokenizer_contract` describes them, :func:`check_tokenizer_contract`
raises if a tokenizer disagrees, so serving with a different tokenizer fails loudly
instead of silently returning bad rankings. A tower saved by jaxir records them in its
serving contract (``jaxir_encoder.json``, :mod:`jaxir.reps.contract`, which checks
them on load). Towers saved by older jaxir versions hold ``jaxir_tokenizer.json``
instead (:data:`CONTRACT_FILE`, read by :func:`load_tokenizer_contract`; no longer
written): :func:`load_tokenizer` checks a tokenizer against it.

**Length buckets** (static shapes, DESIGN principle 9). Every batch is padded to the
smallest bucket length that fits its longest text (capped at ``max_length``), and
batches of a fixed number of rows, so a jitted encoder compiles at most
``len(length_buckets(buckets, max_length))`` programs per batch size (5 with the
defaults and ``max_length=512``). :func:`tokenize_texts_sorted` sorts a corpus by length
so that most batches land in small buckets.

Example:
    >>> bucket_length(40), bucket_length(40, max_length=48), bucket_length(900)
    (64, 48, 512)
    >>> length_buckets(DEFAULT_BUCKETS, max_length=100)
    (32, 64, 100)
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import transformers

from jaxir.data.errors import DataError
from jaxir.data.records import PathLike, count_lines

__all__ = [
    "CONTRACT_FILE",
    "DEFAULT_BUCKETS",
    "SortedBatch",
    "TokenizerContract",
    "bucket_length",
    "check_tokenizer_contract",
    "encode_batch",
    "length_buckets",
    "load_tokenizer",
    "load_tokenizer_contract",
    "pad_batch_rows",
    "tokenize_texts_sorted",
    "tokenizer_contract",
]

DEFAULT_BUCKETS: tuple[int, ...] = (32, 64, 128, 256, 512)
"""Sequence lengths batches are padded to (each capped at ``max_length``)."""

CONTRACT_FILE = "jaxir_tokenizer.json"
"""The tokenizer contract older jaxir versions saved per tower (read, no longer written)."""
_CONTRACT_FORMAT = "jaxir_tokenizer/1"

Batch = dict[str, np.ndarray]

# --------------------------------------------------------------------------- loading


def load_tokenizer(
    path: PathLike, *, check_contract: bool = True
) -> transformers.PreTrainedTokenizerFast:
    """Load a fast tokenizer from a local directory.

    Args:
      path: a directory with ``tokenizer.json`` (loaded like ``AutoTokenizer`` does) or
        only ``vocab.txt`` (loaded as a BERT WordPiece tokenizer).
      check_contract: if the directory holds ``jaxir_tokenizer.json`` (an older jaxir's
        tower), fill in special tokens the tokenizer lacks from it and raise if the
        tokenizer disagrees with it. (A current tower's ``jaxir_encoder.json`` is
        checked by :func:`jaxir.reps.contract.load_tower_tokenizer`.)

    Raises DataError if the directory has neither file, if a ``vocab.txt`` tokenizer's
    size differs from the file's line count, or if the contract check fails.
    """
    root = pathlib.Path(path)
    if not root.is_dir():
        raise DataError(
            root, "not a directory; pass the directory holding tokenizer.json or vocab.txt"
        )
    contract_path = root / CONTRACT_FILE
    contract = load_tokenizer_contract(root) if check_contract and contract_path.is_file() else None
    if (root / "tokenizer.json").is_file():
        tok = _tokenizer_class(root).from_pretrained(root, local_files_only=True)
    elif (root / "vocab.txt").is_file():
        kwargs = {} if contract is None else {"do_lower_case": contract.lowercase}
        # Always from_pretrained(dir): the vocab_file= keyword builds a 5-token vocab in
        # transformers 5 without any warning.
        tok = transformers.BertTokenizerFast.from_pretrained(root, local_files_only=True, **kwargs)
        lines = count_lines(root / "vocab.txt")
        if len(tok) != lines:
            raise DataError(
                root / "vocab.txt",
                f"the tokenizer built from it has {len(tok)} tokens but the file has {lines} "
                "lines (duplicate or blank lines?); vocab.txt must hold one unique token a line",
            )
    else:
        raise DataError(
            root, "holds neither tokenizer.json nor vocab.txt; pass a tokenizer directory"
        )
    if not isinstance(tok, transformers.PreTrainedTokenizerFast):
        raise DataError(
            root, f"loaded a slow tokenizer ({type(tok).__name__}); jaxir needs a fast one"
        )
    if contract is not None:
        for name in ("pad_token", "cls_token", "sep_token", "unk_token", "mask_token"):
            wanted = getattr(contract, name)
            if wanted is not None and getattr(tok, name) is None:
                setattr(tok, name, wanted)
        check_tokenizer_contract(tok, contract, path=contract_path)
    return tok


def _tokenizer_class(root: pathlib.Path) -> type:
    """The class ``AutoTokenizer`` would pick, found without importing the auto module.

    ``transformers.AutoTokenizer`` imports torch (about 5 s) when it is installed; a
    JAX program should not pay that to read a tokenizer. ``tokenizer_config.json`` names
    the class, which loads on its own; without it and without a model ``config.json``
    the generic fast tokenizer is what AutoTokenizer returns; anything else goes through
    ``AutoTokenizer``.
    """
    config = root / "tokenizer_config.json"
    name = None
    if config.is_file():
        try:
            name = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            name = None
    cls = getattr(transformers, name, None) if isinstance(name, str) else None
    if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedTokenizerFast):
        return cls
    if not (root / "config.json").is_file():
        # Nothing names a model type, so AutoTokenizer would build the generic class too.
        return transformers.PreTrainedTokenizerFast
    return transformers.AutoTokenizer


# --------------------------------------------------------------------------- contract


@dataclasses.dataclass(frozen=True)
class TokenizerContract:
    """Tokenizer settings a trained model depends on (the fields of ``jaxir_tokenizer.json``).

    Attributes:
      max_length: longest token sequence (special tokens included) the model was
        trained with.
      pad_token, cls_token, sep_token, unk_token, mask_token: special token strings
        (``None`` where the tokenizer has none).
      lowercase: whether the tokenizer lowercases its input.
      query_prefix, document_prefix: text prepended before tokenizing
        (e.g. ``"query: "`` for E5-style models).
      vocab_size: ``len(tokenizer)``, or ``None`` to skip the check.
    """

    max_length: int
    pad_token: str | None
    cls_token: str | None
    sep_token: str | None
    lowercase: bool
    unk_token: str | None = None
    mask_token: str | None = None
    query_prefix: str = ""
    document_prefix: str = ""
    vocab_size: int | None = None


def _lowercases(tokenizer: transformers.PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer maps upper and lower case alike (tested, not read from config)."""
    upper = tokenizer("Hello World", add_special_tokens=False)["input_ids"]
    lower = tokenizer("hello world", add_special_tokens=False)["input_ids"]
    return upper == lower


def tokenizer_contract(
    tokenizer: transformers.PreTrainedTokenizerBase, *, max_length: int
) -> TokenizerContract:
    """Describe ``tokenizer`` as a :class:`TokenizerContract` (no prefixes)."""
    return TokenizerContract(
        max_length=max_length,
        pad_token=tokenizer.pad_token,
        cls_token=tokenizer.cls_token,
        sep_token=tokenizer.sep_token,
        unk_token=tokenizer.unk_token,
        mask_token=tokenizer.mask_token,
        lowercase=_lowercases(tokenizer),
        vocab_size=len(tokenizer),
    )


def load_tokenizer_contract(directory: PathLike) -> TokenizerContract:
    """Read an older jaxir tower's ``directory/jaxir_tokenizer.json``; DataError names a bad field."""
    path = pathlib.Path(directory) / CONTRACT_FILE
    fix = "re-save the model with this jaxir (it writes jaxir_encoder.json instead)"
    if not path.is_file():
        raise DataError(path, "no such file")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e}); {fix}") from None
    if not isinstance(obj, dict) or obj.get("format") != _CONTRACT_FORMAT:
        raise DataError(
            path, f'expected an object with "format": "{_CONTRACT_FORMAT}"', field="format"
        )
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(TokenizerContract):
        if f.name not in obj:
            if f.default is dataclasses.MISSING:
                raise DataError(path, f"missing; {fix}", field=f.name)
            continue
        value = obj[f.name]
        expected = {"max_length": int, "lowercase": bool, "vocab_size": int}.get(f.name, str)
        optional = f.name in {
            "pad_token",
            "cls_token",
            "sep_token",
            "unk_token",
            "mask_token",
            "vocab_size",
        }
        if not (isinstance(value, expected) or (optional and value is None)) or (
            expected is int and isinstance(value, bool)
        ):
            raise DataError(
                path, f"expected {expected.__name__}, got {json.dumps(value)}", field=f.name
            )
        kwargs[f.name] = value
    return TokenizerContract(**kwargs)


def check_tokenizer_contract(
    tokenizer: transformers.PreTrainedTokenizerBase,
    contract: TokenizerContract,
    *,
    path: PathLike = CONTRACT_FILE,
) -> None:
    """Raise DataError listing every way ``tokenizer`` disagrees with ``contract``.

    Compares the special tokens, the vocabulary size (when recorded) and lowercasing
    (tested on ``"Hello World"``). Prefixes and ``max_length`` are settings applied by
    the caller, so they are not compared.
    """
    problems = []
    for name in ("pad_token", "cls_token", "sep_token", "unk_token", "mask_token"):
        wanted, got = getattr(contract, name), getattr(tokenizer, name)
        if wanted is not None and wanted != got:
            problems.append(f"{name}: contract {wanted!r}, tokenizer {got!r}")
    if contract.vocab_size is not None and contract.vocab_size != len(tokenizer):
        problems.append(f"vocab_size: contract {contract.vocab_size}, tokenizer {len(tokenizer)}")
    if contract.lowercase != _lowercases(tokenizer):
        problems.append(
            f"lowercase: contract {contract.lowercase}, tokenizer {not contract.lowercase}"
        )
    if problems:
        raise DataError(
            path,
            "tokenizer disagrees with the model's tokenizer contract ("
            + "; ".join(problems)
            + "); load the tokenizer saved with the model",
        )


# --------------------------------------------------------------------------- buckets


def length_buckets(
    buckets: Sequence[int] = DEFAULT_BUCKETS, max_length: int | None = None
) -> tuple[int, ...]:
    """The sequence lengths batches can have: buckets below ``max_length``, then ``max_length``.

    Its length is the number of programs a jitted encoder compiles per batch size.
    """
    if not buckets or any(int(b) < 1 for b in buckets):
        raise ValueError(f"buckets must be positive lengths, got {tuple(buckets)}")
    top = max(buckets) if max_length is None else int(max_length)
    if top < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    return tuple(sorted({int(b) for b in buckets if b < top} | {top}))


def bucket_length(
    n: int, buckets: Sequence[int] = DEFAULT_BUCKETS, max_length: int | None = None
) -> int:
    """Smallest bucket length ``>= n``, capped at ``max_length`` (default ``max(buckets)``).

    A sequence longer than ``max_length`` is truncated, so it gets ``max_length``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    lengths = length_buckets(buckets, max_length)
    return next((b for b in lengths if b >= n), lengths[-1])


def _token_ids(
    tokenizer: transformers.PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    prefix: str,
) -> list[list[int]]:
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    if len(texts) == 0:
        raise ValueError("texts is empty; there is nothing to encode")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token (e.g. '[PAD]')")
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    if max_length <= specials:
        raise ValueError(
            f"max_length={max_length} leaves no room next to {specials} special tokens"
        )
    if prefix:
        texts = [prefix + t for t in texts]
    # Truncation keeps the special tokens: the last kept id is still [SEP].
    return tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        add_special_tokens=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )["input_ids"]


def _pad(ids: Sequence[Sequence[int]], length: int, pad_id: int) -> Batch:
    input_ids = np.full((len(ids), length), pad_id, dtype=np.int32)
    attention_mask = np.zeros((len(ids), length), dtype=np.int32)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        attention_mask[row, : len(seq)] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": np.zeros((len(ids), length), dtype=np.int32),
    }


def encode_batch(
    tokenizer: transformers.PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    pad_to_multiple: int | None = None,
    *,
    prefix: str = "",
) -> Batch:
    """Tokenize ``texts`` into int32 ``[B, L]`` arrays padded to a length bucket.

    Args:
      tokenizer: a (fast) Hugging Face tokenizer with a pad token.
      texts: ``[B]`` strings.
      max_length: longest sequence, special tokens included; longer texts are
        truncated and keep their final ``[SEP]``.
      buckets: candidate lengths; ``L = bucket_length(longest, buckets, max_length)``.
      pad_to_multiple: if given, add all-padding rows so ``B`` becomes a multiple of
        it (e.g. the number of devices); ``len(texts)`` are the real rows.
      prefix: text prepended to every input (e.g. ``"query: "``).

    Returns ``{"input_ids", "attention_mask", "token_type_ids"}``, each int32 ``[B, L]``;
    ``token_type_ids`` is all zeros (single segment), padding positions hold the pad id
    and mask 0.

    >>> from tokenizers import Tokenizer, models, pre_tokenizers, processors
    >>> vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "cats": 4, "purr": 5}
    >>> core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    >>> core.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> core.post_processor = processors.TemplateProcessing(
    ...     single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    >>> tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]")
    >>> batch = encode_batch(tok, ["cats purr", "cats"], max_length=16, buckets=(4, 8))
    >>> batch["input_ids"]
    array([[2, 4, 5, 3],
           [2, 4, 3, 0]], dtype=int32)
    >>> encode_batch(tok, ["cats purr cats purr"], max_length=4)["input_ids"]  # truncated
    array([[2, 4, 5, 3]], dtype=int32)
    """
    ids = _token_ids(tokenizer, texts, max_length, prefix)
    length = bucket_length(max(len(s) for s in ids), buckets, max_length)
    batch = _pad(ids, length, tokenizer.pad_token_id)
    if pad_to_multiple is not None:
        batch, _ = pad_batch_rows(batch, pad_to_multiple)
    return batch


def pad_batch_rows(batch: Mapping[str, np.ndarray], multiple: int) -> tuple[Batch, int]:
    """Pad every array's leading (batch) axis with zero rows up to a multiple of ``multiple``.

    Use it to make the batch divisible by the device count, or with
    ``multiple=batch_size`` to give a short last batch the full static shape. Padding
    rows are all zeros, so their ``attention_mask`` is 0; drop their outputs.

    Returns ``(padded_batch, num_real_rows)``.

    >>> b, n = pad_batch_rows({"input_ids": np.ones((3, 4), np.int32)}, 4)
    >>> b["input_ids"].shape, n
    ((4, 4), 3)
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    sizes = {k: v.shape[0] for k, v in batch.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"arrays disagree on the batch size: {sizes}")
    rows = next(iter(sizes.values()))
    target = math.ceil(rows / multiple) * multiple
    padded = {
        k: np.concatenate([v, np.zeros((target - rows, *v.shape[1:]), v.dtype)])
        if target > rows
        else v
        for k, v in batch.items()
    }
    return padded, rows


class SortedBatch(NamedTuple):
    """One length-sorted batch from :func:`tokenize_texts_sorted`.

    Attributes:
      indices: ``[R]`` positions in the original ``texts`` of the ``R`` real rows.
      batch: int32 arrays ``[batch_size, L]``; rows ``R:`` are padding.
    """

    indices: np.ndarray
    batch: Batch


def tokenize_texts_sorted(
    tokenizer: transformers.PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    prefix: str = "",
) -> Iterator[SortedBatch]:
    """Tokenize all ``texts`` once, sort by length (longest first), yield bucketed batches.

    Each batch is ``[batch_size, L]`` (the last one is padded with empty rows) with
    ``L`` the bucket of its longest text, so an encoder jitted on these batches compiles
    at most ``len(length_buckets(buckets, max_length))`` programs. Longest-first puts the
    peak-memory batch first (fail fast) and keeps padding waste small. Put results back
    in order with ``out[sb.indices] = emb[: len(sb.indices)]``.

    All token ids are held in memory (about ``4 * tokens`` bytes); for corpora larger
    than memory call it on chunks.

    >>> from tokenizers import Tokenizer, models, pre_tokenizers, processors
    >>> core = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "a": 2}, unk_token="[UNK]"))
    >>> core.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]")
    >>> for sb in tokenize_texts_sorted(tok, ["a", "a a a", "a a"], max_length=8,
    ...                                 batch_size=2, buckets=(2, 4)):
    ...     print(sb.indices, sb.batch["input_ids"].shape)
    [1 2] (2, 4)
    [0] (2, 2)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ids = _token_ids(tokenizer, texts, max_length, prefix)
    lengths = np.fromiter((len(s) for s in ids), dtype=np.int64, count=len(ids))
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        length = bucket_length(int(lengths[indices[0]]), buckets, max_length)
        batch = _pad([ids[i] for i in indices], length, tokenizer.pad_token_id)
        batch, _ = pad_batch_rows(batch, batch_size)
        yield SortedBatch(indices, batch)


def train_wordpiece(
    texts: Iterable[str], out_dir: PathLike, *, vocab_size: int = 8192, lowercase: bool = True
) -> transformers.PreTrainedTokenizerFast:
    """Builds a BERT-style WordPiece vocabulary from ``texts`` and loads it as a fast tokenizer.

    Used when a model is trained from scratch on a collection (no pretrained vocabulary,
    nothing downloaded). The vocabulary is the special tokens, every character seen (as
    itself and as a ``##`` continuation, so nothing maps to ``[UNK]``), then the most
    frequent whole words (ties broken alphabetically) up to ``vocab_size``. Unlike the
    ``tokenizers`` WordPiece trainer, whose merges depend on hash order, this is
    bit-for-bit deterministic, which exact resumption of a run relies on.

    Example:
      >>> import tempfile
      >>> tok = train_wordpiece(["cats purr", "dogs bark"] * 10, tempfile.mkdtemp(), vocab_size=60)
      >>> tok.convert_ids_to_tokens(tok("cats bark")["input_ids"])
      ['[CLS]', 'cats', 'bark', '[SEP]']
    """
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    splitter = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    ranked = sorted((w for w in words if len(w) > 1), key=lambda w: (-words[w], w))
    vocab += ranked[: max(0, vocab_size - len(vocab))]
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast.from_pretrained(str(out), do_lower_case=lowercase)
    tokenizer.save_pretrained(str(out))
    return load_tokenizer(out, check_contract=False)
