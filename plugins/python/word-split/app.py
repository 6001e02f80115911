"""word-split in Python: the same stage as `plugins/word-split` (Rust). One
record per word of each value, split on Unicode whitespace, with the input's
timestamp and no key; `lowercase = "true"` lowercases the words exactly as
Rust's `str::to_lowercase` does; a value that is not UTF-8 fails that record
alone (it is dead-lettered).

It works on the batch's columns directly rather than through the `sluice`
helper: a Python object per record would cost more than the split itself."""
import re
from bisect import bisect_right

from componentize_py_types import Err
from unicode import LOWER, SIGMA, SIGMA_CASED, SIGMA_IGNORABLE
from wit_world import exports
from wit_world.imports.types import Batch, Column, Error_InvalidConfig, Output, RecordFailure

# Rust's `char::is_whitespace`, the Unicode White_Space property
# (`str.split()` would also split on U+001C..U+001F).
WHITESPACE = re.compile("[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")

# Each character's lowercase by Rust's tables, for `str.translate` (Python's
# `str.lower` has another Unicode version). Built when the component is
# made: componentize-py runs the module's top level then and keeps the
# result. İ is the one character that lowercases to two.
LOWERCASE = {0x130: "i\u0307"}
for first, last, stride, delta in LOWER:
    for c in range(first, last + 1, stride):
        LOWERCASE[c] = c + delta
SIGMA_STARTS = [first for first, _, _ in SIGMA]

# componentize-py makes a fresh Processor for every call: keep settings in
# the module, which lives as long as the instance.
LOWERCASE_WORDS = False


def sigma_class(c):
    """Whether `c` is cased, case-ignorable or neither, for the final-sigma
    rule."""
    i = bisect_right(SIGMA_STARTS, ord(c)) - 1
    return SIGMA[i][2] if i >= 0 and ord(c) <= SIGMA[i][1] else 0


def ignorable_then_cased(chars):
    """Whether, skipping case-ignorable characters, the first of `chars`
    is cased."""
    for c in chars:
        cls = sigma_class(c)
        if cls != SIGMA_IGNORABLE:
            return cls == SIGMA_CASED
    return False


def to_lowercase(word):
    """`word` lowercased as Rust's `str::to_lowercase` does it."""
    if word.isascii():
        return word.lower()
    lowered = word.translate(LOWERCASE)
    if "\u03a3" not in word:
        return lowered
    # Σ is final (ς) after a cased letter and not before one, else σ.
    out = []
    for i, c in enumerate(word):
        if c == "\u03a3":
            final = ignorable_then_cased(reversed(word[:i])) and not ignorable_then_cased(word[i + 1 :])
            out.append("\u03c2" if final else "\u03c3")
        else:
            out.append(c.translate(LOWERCASE))
    return "".join(out)


class Processor(exports.Processor):
    def init(self, config):
        global LOWERCASE_WORDS
        # As the Rust SDK: unknown keys first, then the values.
        for key, _ in config:
            if key != "lowercase":
                raise Err(Error_InvalidConfig(f"unknown config key `{key}` (allowed keys: `lowercase`)"))
        LOWERCASE_WORDS = False
        for _, value in config:
            if value not in ("true", "false"):
                raise Err(
                    Error_InvalidConfig(
                        f"`lowercase`: `{value}` is not a valid boolean "
                        "(provided string was not `true` or `false`)"
                    )
                )
            LOWERCASE_WORDS = value == "true"

    def process(self, info, batch):
        data = bytes(batch.values.data)
        offsets = batch.values.offsets
        out_data = bytearray()
        out_offsets = [0]
        out_ts = []
        failures = []
        for i, ts in enumerate(batch.timestamps):
            raw = data[offsets[i] : offsets[i + 1]]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                failures.append(RecordFailure(i, f"value is not valid UTF-8 at byte {e.start}"))
                continue
            for word in WHITESPACE.split(text):
                if not word:
                    continue
                if LOWERCASE_WORDS:
                    word = to_lowercase(word)
                out_data += word.encode("utf-8")
                out_offsets.append(len(out_data))
                out_ts.append(ts)
        empty = Column(b"", [])
        values = Column(bytes(out_data), out_offsets if out_ts else [])
        return Output(Batch(out_ts, values, empty, b"", [], empty, empty), failures)
