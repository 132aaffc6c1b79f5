"""The serving contract of one encoder tower: ``jaxir_encoder.json`` next to its weights.

A tower directory (a Hugging Face directory: ``config.json``, weights, tokenizer files)
written by jaxir holds one contract file with everything needed to encode with it::

    {"format": "jaxir-encoder/1",
     "kind": "dense",                     # representation kind (jaxir.reps.kinds)
     "pooling": "mean", "normalize": true,
     "roles": {"query":   {"prefix": "query: ",   "max_length": 32},
               "passage": {"prefix": "passage: ", "max_length": 256}},
     "tokenizer": {"pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                   "unk_token": "[UNK]", "mask_token": "[MASK]",
                   "lowercase": true, "vocab_size": 30522},
     "temperature": 0.05}                 # optional: scores = q . p / temperature

``roles`` lists what the tower encodes: a tied dual encoder's one tower serves both
queries and passages (each with its own prefix and maximum length), an untied one's
``query/`` and ``passage/`` one role each, a bundle's query encoder only ``query``.
``tokenizer`` records the tokenizer the model was trained with
(:class:`jaxir.data.tokenizer.TokenizerContract`'s fields other than the per-role
prefix and maximum length); loading checks the tokenizer in the directory against it
(:meth:`EncoderContract.check_tokenizer`), so serving with another tokenizer fails
loudly (:func:`load_tower_tokenizer`). ``null`` when the model was saved without a
tokenizer. ``temperature`` is the dual encoder's score temperature (learned or fixed),
written by :func:`~jaxir.models.dual_encoder.save_dual_encoder` and absent elsewhere.

:func:`jaxir.models.dual_encoder.save_dual_encoder` writes it for every tower,
:func:`jaxir.encode.load_encoder` and the ``jaxir`` commands read it. A plain Hugging
Face directory has no contract (:func:`read_contract` returns ``None``) and loads with
explicit settings; a sentence-transformers directory gives the defaults it encodes
with (:func:`sentence_transformers_defaults`). Directories written before this file
existed (``dual_encoder.json`` format 1 at the model root and ``jaxir_tokenizer.json``
per tower) are still read: their contract is rebuilt from those two files.

Example:
    >>> import tempfile
    >>> contract = EncoderContract(
    ...     pooling="cls", normalize=True,
    ...     roles={"query": RoleContract("query: ", 32), "passage": RoleContract("", 128)})
    >>> d = tempfile.mkdtemp()
    >>> _ = save_contract(d, contract)
    >>> read_contract(d) == contract
    True
    >>> contract.role("passage")
    ('passage', RoleContract(prefix='', max_length=128))
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import transformers

from jaxir.data.errors import DataError
from jaxir.data.tokenizer import CONTRACT_FILE as TOKENIZER_CONTRACT_FILE
from jaxir.data.tokenizer import (
    TokenizerContract,
    check_tokenizer_contract,
    load_tokenizer,
    load_tokenizer_contract,
    tokenizer_contract,
)
from jaxir.reps.kinds import read_kind
from jaxir.reps.pooling import POOLINGS

__all__ = [
    "CONTRACT_FILE",
    "CONTRACT_FORMAT",
    "KINDS",
    "ROLES",
    "EncoderContract",
    "RoleContract",
    "contract_file",
    "describe_tokenizer",
    "load_tower_tokenizer",
    "read_contract",
    "save_contract",
    "sentence_transformers_defaults",
]

CONTRACT_FILE = "jaxir_encoder.json"
CONTRACT_FORMAT = "jaxir-encoder/1"
#: The model-level spec older jaxir versions wrote next to ``query/`` (read, never written).
LEGACY_SPEC_FILE = "dual_encoder.json"
LEGACY_SPEC_FORMAT = "jaxir-dual-encoder/1"
ROLES = ("query", "passage")
#: Representation kinds a tower contract may declare.
KINDS = ("dense",)
#: The tokenizer facts a contract records (TokenizerContract minus per-role settings).
TOKENIZER_FIELDS = (
    "pad_token",
    "cls_token",
    "sep_token",
    "unk_token",
    "mask_token",
    "lowercase",
    "vocab_size",
)
_SPECIAL_TOKENS = ("pad_token", "cls_token", "sep_token", "unk_token", "mask_token")

PathLike = str | os.PathLike[str]


@dataclasses.dataclass(frozen=True)
class RoleContract:
    """How one role's texts are fed to the tower: ``prefix + text``, at most ``max_length`` tokens."""

    prefix: str
    max_length: int


@dataclasses.dataclass(frozen=True)
class EncoderContract:
    """Everything needed to encode with one tower (the module docstring shows the file).

    Attributes:
      pooling: :data:`jaxir.reps.pooling.POOLINGS` entry.
      normalize: L2-normalize the vectors.
      roles: ``{"query" | "passage": RoleContract}``, the roles the tower serves.
      kind: representation kind (``"dense"``).
      tokenizer: the trained-with tokenizer's facts (:data:`TOKENIZER_FIELDS`), or ``None``.
      temperature: the score temperature of the dual encoder the tower belongs to
        (``scores = q @ p.T / temperature``), or ``None`` when not recorded.
    """

    pooling: str
    normalize: bool
    roles: Mapping[str, RoleContract]
    kind: str = "dense"
    tokenizer: Mapping[str, Any] | None = None
    temperature: float | None = None

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}.")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if not self.roles or any(r not in ROLES for r in self.roles):
            raise ValueError(
                f"roles must be a non-empty subset of {ROLES}, got {list(self.roles)}."
            )

    def role(self, name: str | None = None) -> tuple[str, RoleContract]:
        """``(role, settings)``: ``name``, or the tower's only role, or ``"query"`` for a tower serving both.

        Raises:
          ValueError: the tower does not serve ``name``.
        """
        if name is None:
            name = next(iter(self.roles)) if len(self.roles) == 1 else "query"
        if name not in self.roles:
            raise ValueError(
                f"this tower encodes {sorted(self.roles)} only, not {name!r}; load the "
                f"{name} tower of the model instead"
            )
        return name, self.roles[name]

    def with_roles(self, *names: str) -> EncoderContract:
        """The same contract restricted to ``names`` (e.g. a bundle's query encoder)."""
        return dataclasses.replace(self, roles={n: self.role(n)[1] for n in names})

    def to_json(self) -> dict[str, Any]:
        """The JSON object :func:`save_contract` writes."""
        return {
            "format": CONTRACT_FORMAT,
            "kind": self.kind,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "roles": {name: dataclasses.asdict(role) for name, role in self.roles.items()},
            "tokenizer": None if self.tokenizer is None else dict(self.tokenizer),
        } | ({} if self.temperature is None else {"temperature": self.temperature})

    def check_tokenizer(
        self, tokenizer: transformers.PreTrainedTokenizerBase, *, path: PathLike = CONTRACT_FILE
    ) -> None:
        """Fills special tokens ``tokenizer`` lacks from the contract, then checks it agrees.

        Raises:
          DataError: naming ``path`` and every disagreement (special tokens, vocabulary
            size, lowercasing), see :func:`jaxir.data.tokenizer.check_tokenizer_contract`.
        """
        if self.tokenizer is None:
            return
        for name in _SPECIAL_TOKENS:
            wanted = self.tokenizer.get(name)
            if wanted is not None and getattr(tokenizer, name) is None:
                setattr(tokenizer, name, wanted)
        facts = {name: self.tokenizer.get(name) for name in TOKENIZER_FIELDS}
        check_tokenizer_contract(tokenizer, TokenizerContract(max_length=1, **facts), path=path)


def describe_tokenizer(tokenizer: transformers.PreTrainedTokenizerBase) -> dict[str, Any]:
    """The :data:`TOKENIZER_FIELDS` of ``tokenizer`` (what :attr:`EncoderContract.tokenizer` holds)."""
    facts = dataclasses.asdict(tokenizer_contract(tokenizer, max_length=1))
    return {name: facts[name] for name in TOKENIZER_FIELDS}


def contract_file(directory: PathLike) -> pathlib.Path:
    """The file :func:`read_contract` reads for ``directory`` (named in errors).

    ``directory/jaxir_encoder.json``, or for a tower saved by an older jaxir without
    one, its model's ``../dual_encoder.json``.
    """
    directory = pathlib.Path(directory)
    path = directory / CONTRACT_FILE
    legacy = directory.parent / LEGACY_SPEC_FILE
    if path.is_file() or directory.name not in ROLES or not legacy.is_file():
        return path
    return legacy


def load_tower_tokenizer(
    directory: PathLike, contract: EncoderContract | None = None
) -> transformers.PreTrainedTokenizerFast:
    """The tokenizer saved in a tower directory, checked against the tower's contract.

    Args:
      directory: the tower directory (tokenizer files + ``jaxir_encoder.json``).
      contract: the tower's contract (default: :func:`read_contract` of ``directory``;
        none, for a plain Hugging Face directory, skips the check).

    Raises:
      DataError: the tokenizer disagrees with the contract (naming the contract file
        and every disagreement), or the directory holds no tokenizer.
    """
    tokenizer = load_tokenizer(directory)  # checks a legacy jaxir_tokenizer.json itself
    contract = read_contract(directory) if contract is None else contract
    if contract is not None:
        contract.check_tokenizer(tokenizer, path=contract_file(directory))
    return tokenizer


def save_contract(directory: PathLike, contract: EncoderContract) -> pathlib.Path:
    """Writes ``directory/jaxir_encoder.json`` and returns its path."""
    path = pathlib.Path(directory) / CONTRACT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(contract.to_json(), indent=2, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def _field(path, obj: Mapping[str, Any], name: str, kind: type, where: str = "") -> Any:
    if name not in obj:
        raise DataError(path, "missing; re-save the model with this jaxir", field=where + name)
    value = obj[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(
            path,
            f"expected {kind.__name__}, got {json.dumps(value)}; re-save the model with this jaxir",
            field=where + name,
        )
    return value


def _parse(path: pathlib.Path) -> EncoderContract:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e}); re-save the model") from None
    if not isinstance(obj, dict) or obj.get("format") != CONTRACT_FORMAT:
        raise DataError(
            path, f'expected a JSON object with "format": "{CONTRACT_FORMAT}"', field="format"
        )
    kind = read_kind(obj, path, KINDS)
    pooling = _field(path, obj, "pooling", str)
    if pooling not in POOLINGS:
        raise DataError(path, f"{pooling!r} is not one of {POOLINGS}", field="pooling")
    normalize = _field(path, obj, "normalize", bool)
    raw_roles = _field(path, obj, "roles", dict)
    if not raw_roles or any(name not in ROLES for name in raw_roles):
        raise DataError(
            path,
            f"expected a non-empty object keyed by {ROLES}, got {sorted(raw_roles)}",
            field="roles",
        )
    roles = {}
    for name, raw in raw_roles.items():
        if not isinstance(raw, dict):
            raise DataError(path, "expected an object", field=f"roles.{name}")
        max_length = _field(path, raw, "max_length", int, f"roles.{name}.")
        if max_length < 1:
            raise DataError(
                path, f"must be >= 1, got {max_length}", field=f"roles.{name}.max_length"
            )
        roles[name] = RoleContract(_field(path, raw, "prefix", str, f"roles.{name}."), max_length)
    tokenizer = obj.get("tokenizer")
    if tokenizer is not None:
        if not isinstance(tokenizer, dict) or "lowercase" not in tokenizer:
            raise DataError(
                path,
                'expected null or an object with "lowercase" and the special tokens',
                field="tokenizer",
            )
        tokenizer = {name: tokenizer.get(name) for name in TOKENIZER_FIELDS}
    temperature = obj.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise DataError(
                path, f"expected a number, got {json.dumps(temperature)}", field="temperature"
            )
        if not temperature > 0:
            raise DataError(path, f"must be > 0, got {temperature}", field="temperature")
        temperature = float(temperature)
    return EncoderContract(
        pooling, normalize, roles, kind=kind, tokenizer=tokenizer, temperature=temperature
    )


def _legacy(directory: pathlib.Path) -> EncoderContract | None:
    """The contract of a tower saved before ``jaxir_encoder.json`` (``dual_encoder.json`` format 1)."""
    spec_file = directory.parent / LEGACY_SPEC_FILE
    if directory.name not in ROLES or not spec_file.is_file():
        return None
    try:
        data = json.loads(spec_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != LEGACY_SPEC_FORMAT:
        return None
    spec = data["spec"]
    names = ROLES if directory.name == "query" and spec.get("tied", True) else (directory.name,)
    roles = {
        name: RoleContract(spec.get(f"{name}_prefix", ""), int(spec[f"{name}_max_length"]))
        for name in names
    }
    tokenizer = None
    if (directory / TOKENIZER_CONTRACT_FILE).is_file():
        old = dataclasses.asdict(load_tokenizer_contract(directory))
        tokenizer = {name: old[name] for name in TOKENIZER_FIELDS}
    temperature = spec.get("temperature")
    return EncoderContract(
        spec["pooling"],
        bool(spec["normalize"]),
        roles,
        tokenizer=tokenizer,
        temperature=None if temperature is None else float(temperature),
    )


def read_contract(directory: PathLike) -> EncoderContract | None:
    """The contract of a tower directory, or ``None`` for a plain Hugging Face directory.

    Reads ``directory/jaxir_encoder.json``; without it, a tower of a model saved by an
    older jaxir (``../dual_encoder.json`` format 1) gets the contract those files imply.

    Raises:
      DataError: a malformed contract file (naming the file and the field) or an
        unknown ``kind`` (naming the known kinds).
    """
    directory = pathlib.Path(directory)
    path = directory / CONTRACT_FILE
    if path.is_file():
        try:
            return _parse(path)
        except ValueError as e:
            if isinstance(e, DataError):
                raise
            raise DataError(path, str(e).removeprefix(f"{path}: ")) from None
    return _legacy(directory)


# ST module names -> jaxir poolings (``pooling_mode_<name>`` flags of a Pooling module).
_ST_POOLINGS = {
    "cls_token": "cls",
    "mean_tokens": "mean",
    "max_tokens": "max",
    "lasttoken": "last",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
    "weightedmean_tokens": "weightedmean",
}


def _json_file(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None


def sentence_transformers_defaults(directory: PathLike) -> dict[str, Any]:
    """How ``SentenceTransformer(directory)`` encodes, as ``load_encoder`` defaults.

    Reads ``modules.json`` (a ``Pooling`` module's ``config.json`` gives ``pooling``, a
    ``Normalize`` module ``normalize=True``) and ``sentence_bert_config.json``
    (``max_seq_length`` gives ``max_length``). Returns the keys found, ``{}`` for a
    directory that is not a sentence-transformers model. A pooling jaxir lacks comes
    back under its sentence-transformers name (e.g. ``"weightedmean"``), for the caller
    to refuse by name.

    Example:
        >>> import tempfile
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "modules.json").write_text(json.dumps([
        ...     {"path": "", "type": "sentence_transformers.models.Transformer"},
        ...     {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ...     {"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
        >>> (d / "1_Pooling").mkdir()
        >>> _ = (d / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
        >>> _ = (d / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
        >>> sentence_transformers_defaults(d)
        {'normalize': True, 'pooling': 'cls', 'max_length': 128}
    """
    directory = pathlib.Path(directory)
    found: dict[str, Any] = {}
    modules_file = directory / "modules.json"
    if modules_file.is_file():
        modules = _json_file(modules_file)
        if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
            raise DataError(modules_file, "expected a JSON list of module objects")
        types = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
        found["normalize"] = "Normalize" in types
        if "Pooling" in types:
            module = modules[types.index("Pooling")]
            pooling_file = directory / str(module.get("path", "")) / "config.json"
            if pooling_file.is_file():
                config = _json_file(pooling_file)
                modes = [
                    jaxir_name
                    for st_name, jaxir_name in _ST_POOLINGS.items()
                    if isinstance(config, dict) and config.get(f"pooling_mode_{st_name}")
                ]
                if modes:
                    found["pooling"] = "+".join(modes)
    config_file = directory / "sentence_bert_config.json"
    if config_file.is_file():
        length = _json_file(config_file)
        length = length.get("max_seq_length") if isinstance(length, dict) else None
        if isinstance(length, int) and not isinstance(length, bool) and length >= 1:
            found["max_length"] = length
    return found
