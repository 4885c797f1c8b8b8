"""CTranslate2's ``model.bin``, read with numpy alone: the weights of any faster-whisper model on anyone's disk.

The layout, as CTranslate2 writes it (``ModelSpec._serialize`` in its ``python/ctranslate2/specs/model_spec.py``)
and reads it back (``models::Model::load`` in ``src/models/model.cc``), all integers little-endian:

- ``uint32`` binary version (Whisper models are written as version 6; 4 and later store a dtype id per
  variable, which is what this reader understands);
- the spec's name and ``uint32`` revision (a string is ``uint16`` length counting a final NUL, then the bytes);
- ``uint32`` number of variables, then for each, in name order: its name, ``uint8`` rank, rank ``uint32``
  dimensions, ``uint8`` dtype id (float32, int8, int16, int32, float16, bfloat16, in that order), ``uint32``
  payload bytes and the payload (C order);
- ``uint32`` number of aliases, then pairs of names: a variable the converter found equal to one earlier in
  name order is stored once and named again here (``<alias>_scale`` then stands for ``<target>_scale`` too).

A variable quantised by the converter (``--quantization int8``/``int16``) is stored with a ``<name>_scale``
beside it: ``value = stored / scale`` (one scale per output row for int8, one for the whole tensor for int16).

Only the headers are read at first; a variable's bytes are read when it is asked for, so a caller that needs
the encoder of a Whisper model never reads its decoder (most of the file).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

#: Dtype ids in the order of CTranslate2's ``DataType`` enum, each with the numpy type its bytes are read as
#: (bfloat16, which numpy lacks, as the upper halves of float32s).
_DTYPES = (
    ("float32", "<f4"),
    ("int8", "i1"),
    ("int16", "<i2"),
    ("int32", "<i4"),
    ("float16", "<f2"),
    ("bfloat16", "<u2"),
)
_OLDEST_BINARY_VERSION = 4
_NEWEST_BINARY_VERSION = 6


@dataclass(frozen=True)
class Variable:
    """Where one variable's payload lies in the file, and what it is."""

    shape: tuple[int, ...]
    dtype: str
    offset: int
    nbytes: int


class CTranslate2File:
    """The variables of one ``model.bin``, indexed by name (aliases resolved), their bytes read on demand."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._index()
        except UnicodeDecodeError as error:
            raise self._not_one(f"a name in it is not UTF-8: {error}") from None

    def _not_one(self, why: str) -> ConfigError:
        return ConfigError(f"{self.path} is not a whole CTranslate2 model file ({why})")

    def _index(self) -> None:
        size = self.path.stat().st_size
        with self.path.open("rb") as file:

            def read(count: int) -> bytes:
                raw = file.read(count)
                if len(raw) != count:
                    raise self._not_one(f"cut short: it ends at byte {size}, inside a header")
                return raw

            def unpack(form: str) -> int:
                return struct.unpack("<" + form, read(struct.calcsize("<" + form)))[0]

            def string() -> str:
                length = unpack("H")
                raw = read(length)
                if length == 0 or raw[-1] != 0:
                    raise self._not_one(f"a name at byte {file.tell() - length} has no final NUL")
                return raw[:-1].decode("utf-8")

            self.binary_version = unpack("I")
            if not _OLDEST_BINARY_VERSION <= self.binary_version <= _NEWEST_BINARY_VERSION:
                raise self._not_one(
                    f"binary version {self.binary_version}; this reader knows versions "
                    f"{_OLDEST_BINARY_VERSION} to {_NEWEST_BINARY_VERSION}"
                )
            self.spec = string()
            self.revision = unpack("I")
            self.variables: dict[str, Variable] = {}
            for _ in range(unpack("I")):
                name = string()
                rank = unpack("B")
                shape = tuple(int(d) for d in struct.unpack(f"<{rank}I", read(4 * rank)))
                type_id, nbytes = unpack("B"), unpack("I")
                if type_id >= len(_DTYPES):
                    raise self._not_one(f"variable {name} has unknown dtype id {type_id}")
                dtype = _DTYPES[type_id][0]
                expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[type_id][1]).itemsize
                if nbytes != expected:
                    raise self._not_one(f"variable {name} of shape {list(shape)} {dtype} holds {nbytes} bytes")
                offset = file.tell()
                if offset + nbytes > size:
                    raise self._not_one(f"cut short: variable {name} ends past the file's {size} bytes")
                self.variables[name] = Variable(shape, dtype, offset, nbytes)
                file.seek(nbytes, 1)
            self.aliases: dict[str, str] = {}
            for _ in range(unpack("I")):
                alias, target = string(), string()
                self.aliases[alias] = target
                self.aliases[alias + "_scale"] = target + "_scale"

    def _resolve(self, name: str) -> str | None:
        seen = set()
        while name not in self.variables and name in self.aliases and name not in seen:
            seen.add(name)
            name = self.aliases[name]
        return name if name in self.variables else None

    @property
    def names(self) -> set[str]:
        """Every variable's name, aliases included."""
        return {*self.variables, *(alias for alias in self.aliases if self._resolve(alias))}

    def __contains__(self, name: str) -> bool:
        return self._resolve(name) is not None

    def shape(self, name: str) -> tuple[int, ...]:
        return self.variables[self._require(name)].shape

    def _require(self, name: str) -> str:
        found = self._resolve(name)
        if found is None:
            raise self._not_one(f"it has no variable {name}")
        return found

    def raw(self, name: str) -> np.ndarray:
        """The variable as stored (bfloat16 widened to float32)."""
        variable = self.variables[self._require(name)]
        stored = dict(_DTYPES)[variable.dtype]
        with self.path.open("rb") as file:
            file.seek(variable.offset)
            array = np.frombuffer(file.read(variable.nbytes), dtype=stored)
        if variable.dtype == "bfloat16":  # the upper half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array.reshape(variable.shape)

    def float32(self, name: str) -> np.ndarray:
        """The variable's value as float32: float types widened, quantised ones divided by their scale."""
        array = self.raw(name)
        if array.dtype.kind == "f":
            return array.astype(np.float32)
        if f"{name}_scale" not in self:
            raise self._not_one(f"integer variable {name} has no {name}_scale to dequantise it with")
        scale = self.raw(f"{name}_scale").astype(np.float32)
        return array.astype(np.float32) / scale.reshape(-1, *[1] * (array.ndim - 1))

    def scalar(self, name: str) -> int | float:
        return self.raw(name).item()
