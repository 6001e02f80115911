"""Write Sluice stages in Python: records in, records out, without the
columnar batch encoding of the WIT contract (`wit/plugin.wit`).

A stage is a class with an `__init__(self, config)` and either
`process_record(self, record, out)`, called for each input record, or
`process(self, records, out)`, called once per batch with the list of
records. Export it from the module componentize-py builds (`app.py`):

    import sluice

    class Shout(sluice.Stage):
        def __init__(self, config):
            config.allow_only([])

        def process_record(self, record, out):
            out.emit(record.text.upper())

    Processor = sluice.processor(Shout)

and build it with `sluice plugin build DIR` (or `componentize-py -d wit -w
stage componentize app -o shout.wasm` with this file on the Python path).

Three ways to fail, as in the Rust SDK:
- raise `ConfigError` in `__init__`: the pipeline does not start, and the
  message is shown as is (name the key and the value);
- raise `RecordError` (or call `out.fail`) for one record: it alone goes to
  the dead letters with the message; `record.text` raises it for a value
  that is not UTF-8;
- raise anything else: the whole batch fails and the stage's `on_error`
  policy applies to it.

Instance memory lasts as long as the instance (until a trap, a restart or a
new version); keep what must survive in `state`.
"""

import re
from itertools import accumulate

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log as _log
from wit_world.imports import state as _state
from wit_world.imports.types import (
    Batch as _Batch,
    Column as _Column,
    Error_Failed,
    Error_InvalidConfig,
    Output as _Output,
    RecordFailure as _RecordFailure,
)

__all__ = [
    "Config",
    "ConfigError",
    "Output",
    "Record",
    "RecordError",
    "Stage",
    "StateError",
    "log",
    "processor",
    "state",
]


_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class ConfigError(Exception):
    """`__init__` rejects the stage's config; the message names the key."""


class RecordError(Exception):
    """One record cannot be processed; the message says why, for a human."""


class StateError(Exception):
    """A `state` call failed: the entry is too large, or the store is
    unavailable. `too_large` tells which."""

    def __init__(self, message, too_large):
        super().__init__(message)
        self.too_large = too_large


class Config:
    """The stage's `config` table from the pipeline file: text keys and
    values (numbers and booleans arrive as their text)."""

    def __init__(self, pairs):
        self._pairs = dict(pairs)

    def __contains__(self, key):
        return key in self._pairs

    def __iter__(self):
        return iter(self._pairs.items())

    def __len__(self):
        return len(self._pairs)

    def get(self, key, default=None):
        """The value of `key`, or `default` when it is absent."""
        return self._pairs.get(key, default)

    def require(self, key):
        """The value of `key`; a `ConfigError` when it is absent."""
        if key not in self._pairs:
            raise ConfigError(f"missing required config key `{key}`")
        return self._pairs[key]

    def bool(self, key, default=False):
        """`key` as `true` or `false` (the Rust SDK's message otherwise)."""
        value = self._pairs.get(key)
        if value is None:
            return default
        if value not in ("true", "false"):
            raise ConfigError(
                f"`{key}`: `{value}` is not a valid boolean "
                "(provided string was not `true` or `false`)"
            )
        return value == "true"

    def number(self, key, default=None):
        """`key` as a finite float in Rust's decimal syntax; a `ConfigError`
        naming it otherwise."""
        value = self._pairs.get(key)
        if value is None:
            return default
        # Rust's decimal syntax: `float()` alone would also read `1_000`,
        # blanks and other scripts' digits.
        number = float(value) if _DECIMAL.fullmatch(value) else None
        if number is None or abs(number) == float("inf"):
            raise ConfigError(f"`{key}`: `{value}` is not a valid number (invalid float literal)")
        return number

    def allow_only(self, allowed):
        """Rejects any key not in `allowed`, naming it and the allowed ones."""
        for key in sorted(self._pairs):
            if key not in allowed:
                if allowed:
                    listed = ", ".join(f"`{k}`" for k in allowed)
                    hint = f"allowed keys: {listed}"
                else:
                    hint = "this plugin takes no config keys"
                raise ConfigError(f"unknown config key `{key}` ({hint})")


class Record:
    """One input record. `value` and `key` are bytes (`key` is None when the
    record has none), `headers` a list of (name, value) byte pairs,
    `timestamp` its event time in milliseconds since the Unix epoch and
    `index` its position in the batch."""

    __slots__ = ("index", "value", "key", "timestamp", "headers")

    def __init__(self, index, value, key, timestamp, headers):
        self.index = index
        self.value = value
        self.key = key
        self.timestamp = timestamp
        self.headers = headers

    @property
    def text(self):
        """The value as text; a `RecordError` when it is not UTF-8."""
        try:
            return self.value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RecordError(f"value is not valid UTF-8 at byte {e.start}") from None

    @property
    def key_text(self):
        """The key as text (None without a key); a `RecordError` when it is
        not UTF-8."""
        if self.key is None:
            return None
        try:
            return self.key.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RecordError(f"key is not valid UTF-8 at byte {e.start}") from None

    def __repr__(self):
        return f"Record(index={self.index}, key={self.key!r}, value={self.value!r}, timestamp={self.timestamp})"


class Output:
    """What the stage emits for a batch, and the records that failed.

    `info` describes the batch: `pipeline`, `stage`, `id`, `time` (the start
    of its interval, in milliseconds) and `interval`."""

    def __init__(self, info):
        self.info = info
        self._values = []
        self._keys = []
        self._timestamps = []
        self._headers = []
        self._failures = []
        self._current = None

    def emit(self, value, key=None, timestamp=None, headers=()):
        """Emits a record. `value` and `key` are str (encoded as UTF-8) or
        bytes; `timestamp` defaults to that of the record being processed
        (`process_record`), else to the batch's time; `headers` is a
        sequence of (name, value) pairs."""
        if timestamp is None:
            timestamp = self._current.timestamp if self._current else self.info.time
        self._values.append(_bytes(value))
        self._keys.append(None if key is None else _bytes(key))
        self._timestamps.append(timestamp)
        self._headers.append([(_bytes(n), _bytes(v)) for n, v in headers] if headers else None)

    def forward(self, record):
        """Emits `record` as it came in."""
        self._values.append(record.value)
        self._keys.append(record.key)
        self._timestamps.append(record.timestamp)
        self._headers.append(record.headers or None)

    def fail(self, record, message):
        """Sends one input record (a `Record` or its index) to the dead
        letters with `message`; the rest of the batch goes on."""
        index = record.index if isinstance(record, Record) else record
        self._failures.append(_RecordFailure(index, str(message)))

    def __len__(self):
        return len(self._values)

    def _encode(self):
        empty = _Column(b"", [])
        n = len(self._values)
        keys, absent = empty, b""
        if any(k is not None for k in self._keys):
            keys = _column([b"" if k is None else k for k in self._keys])
            bits = bytearray((n + 7) // 8)
            for i, k in enumerate(self._keys):
                if k is None:
                    bits[i // 8] |= 1 << (i % 8)
            absent = bytes(bits).rstrip(b"\0")
        header_offsets, names, values = [], empty, empty
        if any(self._headers):
            flat = [pair for hs in self._headers for pair in (hs or ())]
            header_offsets = [0, *accumulate(len(hs or ()) for hs in self._headers)]
            names = _column([name for name, _ in flat])
            values = _column([value for _, value in flat])
        batch = _Batch(
            self._timestamps, _column(self._values), keys, absent, header_offsets, names, values
        )
        return _Output(batch, self._failures)


class Stage:
    """A base class for stages (optional: any class with `__init__(config)`
    and `process_record` or `process` will do)."""

    def __init__(self, config):
        pass


def _bytes(value):
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _column(entries):
    if not entries:
        return _Column(b"", [])
    return _Column(b"".join(entries), [0, *accumulate(map(len, entries))])


def _entries(column, n):
    data = bytes(column.data)
    offsets = column.offsets
    return [data[offsets[i] : offsets[i + 1]] for i in range(n)]


def _records(batch):
    n = len(batch.timestamps)
    values = _entries(batch.values, n)
    keys = [None] * n
    # A column with no entries has offsets `[]` or `[0]`.
    if len(batch.keys.offsets) > 1:
        absent = batch.keys_absent
        keys = [
            None if i // 8 < len(absent) and absent[i // 8] >> (i % 8) & 1 else k
            for i, k in enumerate(_entries(batch.keys, n))
        ]
    headers = [[] for _ in range(n)]
    if len(batch.header_offsets) > 1:
        total = batch.header_offsets[n]
        names = _entries(batch.header_names, total)
        hvalues = _entries(batch.header_values, total)
        at = batch.header_offsets
        headers = [list(zip(names[at[i] : at[i + 1]], hvalues[at[i] : at[i + 1]])) for i in range(n)]
    ts = batch.timestamps
    return [Record(i, values[i], keys[i], ts[i], headers[i]) for i in range(n)]


def processor(stage_class):
    """The `Processor` class componentize-py exports, running `stage_class`:
    assign it to `Processor` in the app module."""
    per_record = hasattr(stage_class, "process_record")
    if not (per_record or hasattr(stage_class, "process")):
        raise TypeError(f"{stage_class.__name__} has neither process_record nor process")
    # componentize-py makes a fresh `Processor` for every call: the stage
    # lives in this closure, as long as the instance.
    holder = []

    class Processor(exports.Processor):
        def init(self, config):
            try:
                stage = stage_class(Config(config))
            except ConfigError as e:
                raise Err(Error_InvalidConfig(str(e))) from None
            except Exception as e:
                raise Err(Error_Failed(f"{type(e).__name__}: {e}")) from None
            holder[:] = [stage]

        def process(self, info, batch):
            if not holder:
                raise Err(Error_Failed("process called before init"))
            stage = holder[0]
            out = Output(info)
            try:
                records = _records(batch)
                if per_record:
                    for record in records:
                        out._current = record
                        try:
                            stage.process_record(record, out)
                        except RecordError as e:
                            out.fail(record, str(e))
                    out._current = None
                else:
                    stage.process(records, out)
            except Err:
                raise
            except Exception as e:
                raise Err(Error_Failed(f"{type(e).__name__}: {e}")) from None
            return out._encode()

    return Processor


class _State:
    """The stage's keyed state, kept by the engine across batches, traps,
    restarts and new versions (see `wit/plugin.wit`, interface `state`).
    Keys and values are bytes (str is encoded as UTF-8); a batch's writes
    count only when its `process` succeeds."""

    def get(self, key):
        """The value under `key`, or None."""
        try:
            return _state.get(_bytes(key))
        except Err as e:
            raise _state_error(e.value) from None

    def put(self, key, value):
        """Stores `value` under `key`; a `StateError` when it is too large
        (fail that record alone) or the store is unavailable."""
        try:
            _state.put(_bytes(key), _bytes(value))
        except Err as e:
            raise _state_error(e.value) from None

    def delete(self, key):
        """Removes `key`, if present."""
        _state.delete(_bytes(key))


def _state_error(value):
    return StateError(value.value, isinstance(value, _state.StateError_TooLarge))


state = _State()


class _Log:
    """Lines in the engine's log, tagged with pipeline, stage and plugin.
    Each is a call across the boundary: log per batch, not per record."""

    def debug(self, message):
        _log.log(_log.Level.DEBUG, str(message))

    def info(self, message):
        _log.log(_log.Level.INFO, str(message))

    def warn(self, message):
        _log.log(_log.Level.WARN, str(message))

    def error(self, message):
        _log.log(_log.Level.ERROR, str(message))


log = _Log()
